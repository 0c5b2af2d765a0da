"""Applying one recorded event to the order store, in one transaction.

Lock the event row, re-check that it was not already applied, find and lock the order, record
links, mark the event `processed`, recompute the order from the set of its events and save it.
A crash at any point leaves either nothing or everything; a second run of the same event finds it
`processed` and changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.domain.orders import project
from service.events import (
    CheckoutSession,
    InvalidEvent,
    InvalidObject,
    PaymentEvent,
    PaymentIntent,
    Refund,
    parse_envelope,
    parse_payment_event,
)
from service.store import orders as order_store
from service.store.schema import events
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


async def apply_event(engine: AsyncEngine, event_id: str, *, now_ms: int) -> ApplyResult:
    async with engine.begin() as connection:
        row = await _lock_event(connection, event_id)
        if row is None:
            return ApplyResult(MISSING)
        if row.status != "pending":
            return ApplyResult(DUPLICATE, row.type)
        event = _parse(bytes(row.body))
        if event is None:
            await _mark(connection, event_id, "ignored", None, now_ms)
            return ApplyResult(IGNORED, row.type)
        result = await _apply_payment_event(connection, event, now_ms)
    return replace(result, received_ms=row.received_ms)


async def _apply_payment_event(
    connection: AsyncConnection, event: PaymentEvent, now_ms: int
) -> ApplyResult:
    order_id = await _find_order(connection, event)
    if order_id is None:
        raise OrderNotFound(f"no order for {_describe_object(event)}")
    order = await order_store.lock_order(connection, order_id)
    if order is None:  # linked, but the order row vanished: treat as not there yet
        raise OrderNotFound(f"order {order_id} not registered")
    await _record_links(connection, order_id, event)
    await _mark(connection, event.event_id, "processed", order_id, now_ms)
    state = project(order.terms, await _order_events(connection, order_id))
    outcome = STALE if state == order.state else APPLIED
    if outcome == APPLIED:
        await order_store.save_state(connection, order_id, state, now_ms=now_ms)
    return ApplyResult(outcome, event.type, order_id, state.status)


def _parse(body: bytes) -> PaymentEvent | None:
    """The event as the reconciler needs it; None for a type outside the reconciled set."""
    try:
        envelope = parse_envelope(body)
        if not envelope.in_scope:
            return None
        return parse_payment_event(envelope)
    except (InvalidEvent, InvalidObject) as error:
        raise PermanentError("invalid_object", str(error)) from None


async def _lock_event(connection: AsyncConnection, event_id: str) -> Row[Any, Any, Any, Any] | None:
    query = select(events.c.status, events.c.type, events.c.body, events.c.received_ms).where(
        events.c.event_id == event_id
    )
    if connection.dialect.name == "postgresql":
        # Two jobs for the same event (a redelivery, a replay, a rerun after a crash) serialise
        # here; the second sees `processed`.
        query = query.with_for_update()
    return (await connection.execute(query)).first()


async def _mark(
    connection: AsyncConnection, event_id: str, status: str, order_id: str | None, now_ms: int
) -> None:
    await connection.execute(
        update(events)
        .where(events.c.event_id == event_id)
        .values(
            status=status,
            order_id=order_id,
            attempts=events.c.attempts + 1,
            updated_ms=now_ms,
            processed_ms=now_ms,
        )
    )


async def _find_order(connection: AsyncConnection, event: PaymentEvent) -> str | None:
    """Find the order as the contract says: named order ids first, then recorded links."""
    named, linked = _order_keys(event)
    return await order_store.existing_order_id(
        connection, named
    ) or await order_store.linked_order_id(connection, linked)


def _order_keys(event: PaymentEvent) -> tuple[list[str], list[str]]:
    obj = event.object
    if isinstance(obj, PaymentIntent):
        return _present(obj.merchant_order_id, obj.metadata_order_id), [obj.id]
    if isinstance(obj, CheckoutSession):
        return _present(obj.client_reference_id, obj.metadata_order_id), _present(
            obj.id, obj.payment_intent
        )
    return [], [obj.payment_intent]


async def _record_links(connection: AsyncConnection, order_id: str, event: PaymentEvent) -> None:
    obj = event.object
    if isinstance(obj, PaymentIntent):
        await order_store.link(connection, order_id, order_store.LINK_PAYMENT_INTENT, obj.id)
    elif isinstance(obj, CheckoutSession):
        await order_store.link(connection, order_id, order_store.LINK_CHECKOUT_SESSION, obj.id)
        if obj.payment_intent is not None:
            await order_store.link(
                connection, order_id, order_store.LINK_PAYMENT_INTENT, obj.payment_intent
            )


async def _order_events(connection: AsyncConnection, order_id: str) -> list[PaymentEvent]:
    """Every event applied to the order (this one included): the set the projection folds."""
    bodies = (
        await connection.execute(
            select(events.c.body).where(
                events.c.order_id == order_id, events.c.status == "processed"
            )
        )
    ).scalars()
    parsed = [_parse(bytes(body)) for body in bodies]
    return [event for event in parsed if event is not None]


def _describe_object(event: PaymentEvent) -> str:
    obj = event.object
    if isinstance(obj, Refund):
        return f"refund {obj.id} of payment_intent {obj.payment_intent}"
    kind = "payment_intent" if isinstance(obj, PaymentIntent) else "checkout_session"
    return f"{kind} {obj.id}"


def _present(*values: str | None) -> list[str]:
    return [value for value in values if value]
