"""Tables of the order store. Times are integer epoch milliseconds: identical on every backend."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
)

from service.domain.event_status import EventStatus

ID = String(255)

metadata = MetaData()

# The values `events.status` holds.
EVENT_STATUSES: Final = tuple(status.value for status in EventStatus)

# The inbox: every verified event, recorded before the ingress answers 2xx.
events = Table(
    "events",
    metadata,
    Column("event_id", ID, primary_key=True),
    Column("type", ID, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("livemode", Boolean, nullable=True),
    Column("body", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False, server_default=EventStatus.PENDING.value),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text, nullable=True),
    Column("order_id", ID, nullable=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("processed_ms", BigInteger, nullable=True),
    Index("ix_events_status_received", "status", "received_ms"),
    Index("ix_events_order_id", "order_id"),
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", ID, primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    # The links the merchant registered; the projection starts from them.
    Column("registered_payment_intent_id", ID, nullable=True),
    Column("registered_checkout_session_id", ID, nullable=True),
    Column("status", String(32), nullable=False, server_default="pending"),
    Column("amount_received", BigInteger, nullable=False, server_default="0"),
    Column("amount_refunded", BigInteger, nullable=False, server_default="0"),
    Column("payment_intent_id", ID, nullable=True),
    Column("checkout_session_id", ID, nullable=True),
    Column("needs_review", Boolean, nullable=False, server_default=false()),
    Column("review_reason", Text, nullable=True),
    Column("version", Integer, nullable=False, server_default="0"),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_orders_status", "status"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", ID, primary_key=True),
    Column("order_id", ID, ForeignKey("orders.order_id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", String(32), nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Index("ix_refunds_order_id", "order_id"),
)

# Every PaymentIntent or Checkout Session id ever linked to an order, so that later events
# (a refund naming only its payment_intent) find the order even after the customer retried.
order_links = Table(
    "order_links",
    metadata,
    Column("external_id", ID, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("order_id", ID, ForeignKey("orders.order_id"), nullable=False),
    Index("ix_order_links_order_id", "order_id"),
)

# The order ids, PaymentIntent and Checkout Session ids an event named when its order could not
# be found (recorded by the worker as it counts that failure), so that registering the order or
# linking one of the ids finds the events waiting for it (service.operations.heal).
unmatched_event_keys = Table(
    "unmatched_event_keys",
    metadata,
    Column("key", ID, primary_key=True),
    Column("event_id", ID, primary_key=True),
)
