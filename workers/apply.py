"""Applying one recorded event to the order store, in one transaction.

Lock the event row, re-check that it was not already applied, find and lock the order, record
links, mark the event `processed`, recompute the order from the set of its events and save it.
A crash at any point leaves either nothing or everything; a second run of the same event finds it
`processed` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.domain.events import REFUND_TYPES, CheckoutSession, PaymentEvent, PaymentIntent, Refund
from service.domain.orders import project
from service.domain.refunds import RefundState
from service.store import inbox
from service.store import orders as order_store
from service.store.driver import DriverTransaction, driver_transaction
from service.store.orders import OrderView
from service.wooshpay.events import (
    InvalidEvent,
    InvalidObject,
    parse_envelope,
    parse_payment_event,
)
from workers.errors import OrderNotFound, PermanentError

APPLIED: Final = "applied"
STALE: Final = "stale"  # a new event that did not change the order (it was overtaken)
DUPLICATE: Final = "duplicate"
IGNORED: Final = "ignored"
MISSING: Final = "missing"  # a job for an event id the inbox does not hold


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: str
    event_type: str | None = None
    order_id: str | None = None
    status: str | None = None
    received_ms: int | None = None
    # PaymentIntent or Checkout Session ids this event linked to its order for the first time:
    # events that named them may have been waiting for that link (workers.healing).
    linked: tuple[str, ...] = ()


async def apply_event(engine: AsyncEngine, event_id: str, *, now_ms: int) -> ApplyResult:
    # On the driver connection (service.store.driver.driver_transaction), without SQLAlchemy's
    # per-statement work: this transaction runs for every event.
    async with driver_transaction(engine) as transaction:
        # Two jobs for the same event (a redelivery, a replay, a rerun after a crash) serialise
        # on this lock; the second sees `processed`.
        locked = await inbox.lock_event(transaction, event_id)
        if locked is None:
            return ApplyResult(MISSING)
        if locked.status != EventStatus.PENDING:
            return ApplyResult(DUPLICATE, locked.type)
        event = _parse(locked.body)
        if event is None:
            await inbox.mark_ignored(transaction, event_id, now_ms=now_ms)
            return ApplyResult(IGNORED, locked.type)
        result = await _apply_payment_event(transaction, event, now_ms)
    return replace(result, received_ms=locked.received_ms)


async def _apply_payment_event(
    transaction: DriverTransaction, event: PaymentEvent, now_ms: int
) -> ApplyResult:
    row = await _lock_order(transaction, event)
    order_id = str(row["order_id"])
    # Read once the order is locked: no other event of this order can be applied meanwhile.
    others = await _other_applied(transaction, order_id, event)
    order = order_store.order_view(row, await _stored_refunds(transaction, order_id, others))
    linked = await _record_links(transaction, order, event)
    state = project(order.terms, [*others, event])
    if state == order.state:
        await inbox.mark_processed(transaction, event.event_id, order_id, now_ms=now_ms)
        return ApplyResult(STALE, event.type, order_id, state.status, linked=linked)
    await order_store.save_state(
        transaction, order, state, now_ms=now_ms, processed_event_id=event.event_id
    )
    return ApplyResult(APPLIED, event.type, order_id, state.status, linked=linked)


def _parse(body: bytes) -> PaymentEvent | None:
    """The event as the reconciler needs it; None for a type outside the reconciled set."""
    try:
        envelope = parse_envelope(body)
        if not envelope.in_scope:
            return None
        return parse_payment_event(envelope)
    except (InvalidEvent, InvalidObject) as error:
        raise PermanentError("invalid_object", str(error)) from None


async def _lock_order(transaction: DriverTransaction, event: PaymentEvent) -> Mapping[str, Any]:
    """Find the order as the contract says (named order ids first, then recorded links) and
    lock its row; OrderNotFound when there is none yet."""
    named, linked = _order_keys(event)
    row = await order_store.lock_first_order(transaction, named)
    if row is not None:
        return row
    order_id = await order_store.linked_order_id(transaction, linked)
    if order_id is None:
        raise OrderNotFound(
            f"no order for {_describe_object(event)}", order_ids=named, linked_ids=linked
        )
    row = await order_store.lock_order(transaction, order_id)
    if row is None:  # linked, but the order row vanished: treat as not there yet
        raise OrderNotFound(f"order {order_id} not registered", order_ids=named, linked_ids=linked)
    return row


async def _stored_refunds(
    transaction: DriverTransaction, order_id: str, others: list[PaymentEvent]
) -> list[RefundState]:
    """The order's stored refunds. They are part of the projection of its applied events, and
    only refund events make refunds: without one among them there are none to read."""
    if not any(other.type in REFUND_TYPES for other in others):
        return []
    return await order_store.order_refunds(transaction, order_id)


def _order_keys(event: PaymentEvent) -> tuple[list[str], list[str]]:
    obj = event.object
    if isinstance(obj, PaymentIntent):
        return _present(obj.merchant_order_id, obj.metadata_order_id), [obj.id]
    if isinstance(obj, CheckoutSession):
        return _present(obj.client_reference_id, obj.metadata_order_id), _present(
            obj.id, obj.payment_intent
        )
    return [], [obj.payment_intent]


async def _record_links(
    transaction: DriverTransaction, order: OrderView, event: PaymentEvent
) -> tuple[str, ...]:
    """Link the event's PaymentIntent and Checkout Session ids to the order; return the ids the
    order did not carry yet (a link that already existed is kept as it was: the first wins)."""
    obj = event.object
    links: list[tuple[str, str | None]] = []
    if isinstance(obj, PaymentIntent):
        links = [(order_store.LINK_PAYMENT_INTENT, obj.id)]
    elif isinstance(obj, CheckoutSession):
        links = [
            (order_store.LINK_CHECKOUT_SESSION, obj.id),
            (order_store.LINK_PAYMENT_INTENT, obj.payment_intent),
        ]
    # An id the order's state already carries was linked when it got there (at registration,
    # or by the event that brought it, right here), so linking it again would change nothing.
    known = {order.state.payment_intent_id, order.state.checkout_session_id}
    new: list[str] = []
    for kind, external_id in links:
        if external_id is not None and external_id not in known:
            await order_store.link(transaction, order.terms.order_id, kind, external_id)
            new.append(external_id)
    return tuple(new)


async def _other_applied(
    transaction: DriverTransaction, order_id: str, event: PaymentEvent
) -> list[PaymentEvent]:
    """The order's other applied events: with this one, the set the projection folds."""
    bodies = await inbox.other_applied_bodies(
        transaction, order_id, excluding_event_id=event.event_id
    )
    parsed = [_parse(body) for body in bodies]
    return [other for other in parsed if other is not None]


def _describe_object(event: PaymentEvent) -> str:
    obj = event.object
    if isinstance(obj, Refund):
        return f"refund {obj.id} of payment_intent {obj.payment_intent}"
    kind = "payment_intent" if isinstance(obj, PaymentIntent) else "checkout_session"
    return f"{kind} {obj.id}"


def _present(*values: str | None) -> list[str]:
    return [value for value in values if value]
