"""Initial schema: events inbox, orders, refunds, order links.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("event_id", ID, primary_key=True),
        sa.Column("type", ID, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("livemode", sa.Boolean, nullable=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("order_id", ID, nullable=True),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
        sa.Column("processed_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_events_status_received", "events", ["status", "received_ms"])
    op.create_index("ix_events_order_id", "events", ["order_id"])
    op.create_table(
        "orders",
        sa.Column("order_id", ID, primary_key=True),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("registered_payment_intent_id", ID, nullable=True),
        sa.Column("registered_checkout_session_id", ID, nullable=True),
        sa.Column("status", sa.String(32), nullable=False, server_default="pending"),
        sa.Column("amount_received", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("amount_refunded", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("payment_intent_id", ID, nullable=True),
        sa.Column("checkout_session_id", ID, nullable=True),
        sa.Column("needs_review", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("review_reason", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_orders_status", "orders", ["status"])
    op.create_table(
        "refunds",
        sa.Column("refund_id", ID, primary_key=True),
        sa.Column("order_id", ID, sa.ForeignKey("orders.order_id"), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("updated_ms", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_refunds_order_id", "refunds", ["order_id"])
    op.create_table(
        "order_links",
        sa.Column("external_id", ID, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("order_id", ID, sa.ForeignKey("orders.order_id"), nullable=False),
    )
    op.create_index("ix_order_links_order_id", "order_links", ["order_id"])


def downgrade() -> None:
    op.drop_table("order_links")
    op.drop_table("refunds")
    op.drop_table("orders")
    op.drop_table("events")
