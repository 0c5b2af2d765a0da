"""Events waiting for their order: the keys they named, and reopening them once it is there.

The worker records an event's keys (order ids, PaymentIntent and Checkout Session ids) in the
transaction that counts its first `order_not_found` failure; healing (service.operations.heal)
looks events up by key once an order is registered or an id is linked.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.domain.event_status import ORDER_NOT_FOUND, EventStatus
from service.store.engine import reading
from service.store.schema import events, unmatched_event_keys

_INSERT_OR_IGNORE = {
    "postgresql": postgresql.insert(unmatched_event_keys).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(unmatched_event_keys).on_conflict_do_nothing(),
}
# Statuses after which an event never needs healing: its keys can go.
_SETTLED = (EventStatus.PROCESSED, EventStatus.IGNORED)


async def remember_keys(connection: AsyncConnection, event_id: str, keys: Sequence[str]) -> None:
    """Record the keys an unmatched event named (again on a later failure: changes nothing)."""
    rows = [{"key": key, "event_id": event_id} for key in dict.fromkeys(keys) if key]
    if not rows:
        return
    await connection.execute(_INSERT_OR_IGNORE[connection.dialect.name], rows)


async def reopen_unmatched(engine: AsyncEngine, keys: Sequence[str], *, now_ms: int) -> list[str]:
    """Reopen the events naming any of `keys` that were parked for want of their order (back to
    `pending` with a fresh attempt budget); return every such event now `pending`, to enqueue.

    Settled events' keys are dropped on the way, so the table holds only waiting events.
    """
    if not keys:
        return []
    # A read first, and no write transaction at all in the usual case: most registrations and
    # links have no event waiting for them.
    async with reading(engine).connect() as connection:
        candidates = list(
            (
                await connection.execute(
                    select(unmatched_event_keys.c.event_id)
                    .where(unmatched_event_keys.c.key.in_(list(keys)))
                    .distinct()
                )
            ).scalars()
        )
    if not candidates:
        return []
    async with engine.begin() as connection:
        await connection.execute(
            update(events)
            .where(
                events.c.event_id.in_(candidates),
                events.c.status == EventStatus.FAILED,
                events.c.last_error.startswith(ORDER_NOT_FOUND),
            )
            .values(status=EventStatus.PENDING, attempts=0, updated_ms=now_ms)
        )
        pending = list(
            (
                await connection.execute(
                    select(events.c.event_id)
                    .where(events.c.event_id.in_(candidates))
                    .where(events.c.status == EventStatus.PENDING)
                    .order_by(events.c.received_ms, events.c.event_id)
                )
            ).scalars()
        )
        settled = select(events.c.event_id).where(
            events.c.event_id.in_(candidates), events.c.status.in_(_SETTLED)
        )
        await connection.execute(
            delete(unmatched_event_keys).where(unmatched_event_keys.c.event_id.in_(settled))
        )
    return [str(event_id) for event_id in pending]
