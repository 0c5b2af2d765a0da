"""The event inbox: verified events recorded durably before the ingress answers 2xx."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.events import WebhookEvent
from service.store.schema import events


@dataclass(frozen=True, slots=True)
class EventRecord:
    event_id: str
    type: str
    status: str
    attempts: int
    last_error: str | None
    order_id: str | None
    created_ms: int
    received_ms: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A verified event about to be recorded; `status` is `pending` or `ignored`."""

    event: WebhookEvent
    body: bytes
    status: str


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


async def record_events(
    engine: AsyncEngine, batch: Sequence[NewEvent], *, now_ms: int
) -> list[bool]:
    """Insert-or-ignore each event in one transaction; True where the event id was new.

    Idempotency lives here, on the primary key: a redelivered event id changes nothing.
    """
    async with engine.begin() as connection:
        return [await _insert_if_new(connection, item, now_ms) for item in batch]


async def record_event(engine: AsyncEngine, item: NewEvent, *, now_ms: int) -> bool:
    (is_new,) = await record_events(engine, [item], now_ms=now_ms)
    return is_new


_INSERT_NEW_RETURNING = {
    name: dialect.insert(events)
    .on_conflict_do_nothing(index_elements=[events.c.event_id])
    .returning(events.c.event_id, sort_by_parameter_order=True)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _row(item: NewEvent, now_ms: int) -> dict[str, object]:
    return {
        "event_id": item.event.event_id,
        "type": item.event.type,
        "created_ms": item.event.created_ms,
        "livemode": item.event.livemode,
        "body": item.body,
        "status": item.status,
        "attempts": 0,
        "received_ms": now_ms,
        "updated_ms": now_ms,
        "processed_ms": now_ms if item.status == "ignored" else None,
    }


async def _insert_if_new(connection: AsyncConnection, item: NewEvent, now_ms: int) -> bool:
    values = _row(item, now_ms)
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(events)
        .values(values)
        .on_conflict_do_nothing(index_elements=[events.c.event_id])
    )
    result = await connection.execute(statement)
    return result.rowcount == 1


async def get_event(engine: AsyncEngine, event_id: str) -> EventRecord | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(select(*_RECORD_COLUMNS).where(events.c.event_id == event_id))
        ).first()
    return _record(row) if row is not None else None


async def list_events(
    engine: AsyncEngine,
    *,
    status: str | None = None,
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
    engine: AsyncEngine, *, received_before_ms: int, limit: int
) -> list[str]:
    """Oldest `pending` events received before a moment: the sweeper's candidates."""
    query = (
        select(events.c.event_id)
        .where(events.c.status == "pending", events.c.received_ms < received_before_ms)
        .order_by(events.c.received_ms)
        .limit(limit)
    )
    async with engine.connect() as connection:
        return list((await connection.execute(query)).scalars())


async def reopen_for_replay(engine: AsyncEngine, event_ids: Sequence[str], *, now_ms: int) -> None:
    """Put failed events back to `pending` with a fresh attempt budget.

    Processed and ignored events are left as they are: replaying them changes nothing.
    """
    if not event_ids:
        return
    async with engine.begin() as connection:
        await connection.execute(
            update(events)
            .where(events.c.event_id.in_(list(event_ids)), events.c.status == "failed")
            .values(status="pending", attempts=0, updated_ms=now_ms)
        )


async def inbox_summary(engine: AsyncEngine) -> tuple[dict[str, int], int | None]:
    """Event counts by status, and when the oldest pending event was received (epoch ms)."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(events.c.status, func.count()).group_by(events.c.status)
            )
        ).all()
        oldest = (
            await connection.execute(
                select(func.min(events.c.received_ms)).where(events.c.status == "pending")
            )
        ).scalar()
    return {str(status): int(count) for status, count in rows}, oldest


def _record(row: Row[*tuple[Any, ...]]) -> EventRecord:
    return EventRecord(**row._mapping)


async def record_new_events(
    engine: AsyncEngine, batch: Sequence[NewEvent], *, now_ms: int
) -> set[str]:
    """Insert-or-ignore a batch in one statement and one transaction; the ids that were new.

    The group-commit path of the ingress: concurrent requests share one commit.
    """
    if not batch:
        return set()
    rows = [_row(item, now_ms) for item in batch]
    async with engine.begin() as connection:
        # One statement object per dialect, executed with a list of parameter sets: SQLAlchemy
        # caches its compiled form and batches the rows ("insertmanyvalues"), where a
        # .values(rows) statement would be compiled anew for every batch.
        statement = _INSERT_NEW_RETURNING[connection.dialect.name]
        result = await connection.execute(statement, rows)
        return set(result.scalars())
