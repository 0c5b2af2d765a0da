"""Failed attempts: counting them, parking an event as `failed`, reopening it for a replay."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.store.inbox.unmatched import remember_keys
from service.store.schema import events

# `last_error` keeps this much of an error's description.
MAX_ERROR_LENGTH: Final = 1000


async def record_failure(
    engine: AsyncEngine,
    event_id: str,
    *,
    error: str,
    parks: Callable[[int], bool],
    now_ms: int,
    unmatched_keys: Sequence[str] = (),
) -> int | None:
    """Count a failed attempt and keep its error; park the event as `failed` if `parks` says so
    of its attempt count (this failure included). Returns that count, or None when the event is
    no longer pending (another job finished it meanwhile) and nothing was written.

    `parks` is the caller's retry policy (workers.retries), applied inside the transaction that
    counts the attempt, so no job ever sees the count without the parking that goes with it.
    `unmatched_keys`, for a failure to find the event's order, are the keys it named: recorded
    with the count, for healing to find (service.store.inbox.unmatched).
    """
    async with engine.begin() as connection:
        attempts = (
            await connection.execute(
                update(events)
                .where(events.c.event_id == event_id, events.c.status == EventStatus.PENDING)
                .values(
                    attempts=events.c.attempts + 1,
                    last_error=error[:MAX_ERROR_LENGTH],
                    updated_ms=now_ms,
                )
                .returning(events.c.attempts)
            )
        ).scalar_one_or_none()
        if attempts is None:
            return None
        await remember_keys(connection, event_id, unmatched_keys)
        if parks(attempts):
            await connection.execute(
                update(events)
                .where(events.c.event_id == event_id)
                .values(status=EventStatus.FAILED)
            )
    return int(attempts)


async def reopen_for_replay(engine: AsyncEngine, event_ids: Sequence[str], *, now_ms: int) -> None:
    """Put failed events back to `pending` with a fresh attempt budget.

    Processed and ignored events are left as they are: replaying them changes nothing.
    """
    if not event_ids:
        return
    async with engine.begin() as connection:
        await connection.execute(
            update(events)
            .where(events.c.event_id.in_(list(event_ids)), events.c.status == EventStatus.FAILED)
            .values(status=EventStatus.PENDING, attempts=0, updated_ms=now_ms)
        )
