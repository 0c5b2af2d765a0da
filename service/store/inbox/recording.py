"""Arrivals: verified events recorded durably, insert-or-ignore, before the ingress answers 2xx."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.store.driver import driver_connection
from service.wooshpay.events import WebhookEvent


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A verified event about to be recorded; `status` is `pending` or `ignored`."""

    event: WebhookEvent
    body: bytes
    status: EventStatus


def first_new(batch: Sequence[NewEvent], new_ids: set[str]) -> list[bool]:
    """Per item of a recorded batch, whether it made a new row: the first occurrence of each id
    in `new_ids` (what record_new_events returned); repeats in the batch are duplicates."""
    remaining = set(new_ids)
    flags = []
    for item in batch:
        event_id = item.event.event_id
        flags.append(event_id in remaining)
        remaining.discard(event_id)
    return flags


# The columns `_row` fills, in the order the batch statements below list them.
_INSERT_COLUMNS = (
    "event_id",
    "type",
    "created_ms",
    "livemode",
    "body",
    "status",
    "attempts",
    "received_ms",
    "updated_ms",
    "processed_ms",
)

# PostgreSQL: one statement whatever the batch size, so asyncpg prepares it once per connection;
# columns travel as arrays. Mirrors `_row`: `ignored` events are processed on arrival.
_POSTGRES_INSERT_NEW = f"""
INSERT INTO events (event_id, type, created_ms, livemode, body, status, attempts,
                    received_ms, updated_ms, processed_ms)
SELECT new.event_id, new.type, new.created_ms, new.livemode, new.body, new.status, 0,
       $7, $7, CASE WHEN new.status = '{EventStatus.IGNORED}' THEN $7::bigint END
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[], $5::bytea[], $6::text[])
     AS new(event_id, type, created_ms, livemode, body, status)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""  # noqa: S608 - no data, only a status constant


@functools.lru_cache(maxsize=64)
def _sqlite_insert_new(rows: int) -> str:
    """SQLite: one multi-row INSERT per batch size (the driver caches each prepared form)."""
    placeholders = "(" + ", ".join("?" * len(_INSERT_COLUMNS)) + ")"
    columns, values = ", ".join(_INSERT_COLUMNS), ", ".join([placeholders] * rows)
    insert = f"INSERT INTO events ({columns}) VALUES {values}"  # noqa: S608 - no data, only "?"
    return f"{insert} ON CONFLICT (event_id) DO NOTHING RETURNING event_id"


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
        "processed_ms": now_ms if item.status == EventStatus.IGNORED else None,
    }


async def record_new_events(
    engine: AsyncEngine, batch: Sequence[NewEvent], *, now_ms: int
) -> set[str]:
    """Insert-or-ignore a batch in one statement and one transaction; the ids that were new.

    The group-commit path of the ingress: concurrent requests share one commit. It talks to the
    driver directly (see service.store.driver.driver_connection).
    Rows go in event-id order, so two batches holding the same new ids (two ingress processes,
    or two batches of one) lock them in the same order and cannot deadlock.
    """
    if not batch:
        return set()
    ordered = sorted(batch, key=lambda item: item.event.event_id)
    if engine.dialect.name == "postgresql":
        return await _record_new_postgres(engine, ordered, now_ms)
    return await _record_new_sqlite(engine, ordered, now_ms)


async def _record_new_postgres(
    engine: AsyncEngine, batch: Sequence[NewEvent], now_ms: int
) -> set[str]:
    """One round trip: a single statement outside an explicit transaction is its own
    transaction, committed before PostgreSQL answers (BEGIN and COMMIT would be two more)."""
    columns = (
        [item.event.event_id for item in batch],
        [item.event.type for item in batch],
        [item.event.created_ms for item in batch],
        [item.event.livemode for item in batch],
        [item.body for item in batch],
        [item.status for item in batch],
    )
    async with driver_connection(engine) as driver:
        rows = await driver.fetch(_POSTGRES_INSERT_NEW, *columns, now_ms)
    return {str(row["event_id"]) for row in rows}


async def _record_new_sqlite(
    engine: AsyncEngine, batch: Sequence[NewEvent], now_ms: int
) -> set[str]:
    """One hop to aiosqlite's thread: the connection is in autocommit mode, so the single
    INSERT is its own transaction, committed (and synced) before it returns; SQLite takes the
    write lock as the statement starts, as BEGIN IMMEDIATE would."""
    values: list[object] = []
    for item in batch:
        row = _row(item, now_ms)
        values.extend(row[column] for column in _INSERT_COLUMNS)
    async with driver_connection(engine) as driver:
        rows = await driver.execute_fetchall(_sqlite_insert_new(len(batch)), values)
    return {str(row[0]) for row in rows}
