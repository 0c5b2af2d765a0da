"""Reading the inbox: one event, listings, the metrics summary, the sweeper's pending ids, and
the schema probe the worker runs before it starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.domain.event_status import EventStatus
from service.store.engine import reading
from service.store.schema import events


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: str
    type: str
    status: EventStatus
    attempts: int
    last_error: str | None
    order_id: str | None
    created_ms: int
    received_ms: int
    updated_ms: int


_RECORD_COLUMNS = (
    events.c.event_id,
    events.c.type,
    events.c.status,
    events.c.attempts,
    events.c.last_error,
    events.c.order_id,
    events.c.created_ms,
    events.c.received_ms,
    events.c.updated_ms,
)


async def get_event(engine: AsyncEngine, event_id: str) -> EventRecord | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(select(*_RECORD_COLUMNS).where(events.c.event_id == event_id))
        ).first()
    return _record(row) if row is not None else None


async def list_events(
    engine: AsyncEngine,
    *,
    status: EventStatus | None = None,
    event_type: str | None = None,
    limit: int | None = None,
) -> list[EventRecord]:
    query = select(*_RECORD_COLUMNS).order_by(events.c.received_ms, events.c.event_id)
    if status is not None:
        query = query.where(events.c.status == status)
    if event_type is not None:
        query = query.where(events.c.type == event_type)
    if limit is not None:
        query = query.limit(limit)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [_record(row) for row in rows]


async def pending_event_ids(
    engine: AsyncEngine,
    *,
    received_before_ms: int,
    limit: int,
    after: tuple[int, str] | None = None,
) -> list[tuple[int, str]]:
    """One page of `pending` events received before a moment, oldest first, as
    (received_ms, event_id) keys; pass the last key as `after` for the next page."""
    query = (
        select(events.c.received_ms, events.c.event_id)
        .where(events.c.status == EventStatus.PENDING, events.c.received_ms < received_before_ms)
        .order_by(events.c.received_ms, events.c.event_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(events.c.received_ms, events.c.event_id) > tuple_(*after))
    async with reading(engine).connect() as connection:
        rows = (await connection.execute(query)).all()
    return [(int(received_ms), str(event_id)) for received_ms, event_id in rows]


async def inbox_summary(engine: AsyncEngine) -> tuple[dict[str, int], int | None]:
    """Event counts by status, and when the oldest pending event was received (epoch ms).

    Counts are keyed by the stored value (an EventStatus looks itself up there, being a str)."""
    async with reading(engine).connect() as connection:
        rows = (
            await connection.execute(
                select(events.c.status, func.count()).group_by(events.c.status)
            )
        ).all()
        oldest = (
            await connection.execute(
                select(func.min(events.c.received_ms)).where(events.c.status == EventStatus.PENDING)
            )
        ).scalar()
    return {str(status): int(count) for status, count in rows}, oldest


async def probe_inbox_table(connection: AsyncConnection) -> None:
    """Touch the inbox table (a constant, at most one row): on a store never migrated this fails
    ("no such table")."""
    await connection.execute(select(literal(1)).select_from(events).limit(1))


def _record(row: Row[*tuple[Any, ...]]) -> EventRecord:
    fields = row._mapping
    return EventRecord(**{**fields, "status": EventStatus(fields["status"])})
