"""Backoff for transient failures, and the inbox bookkeeping of attempts and parking."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.schema import events

MAX_DELAY_S: Final = 300.0


def backoff_s(attempt: int, *, base_s: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter, capped: base * 2^(attempt-1), scaled by 0.5..1.0.

    Jitter spreads retries of many events that failed together (a database outage) so they do
    not return as one thundering herd.
    """
    exponent = min(max(attempt - 1, 0), 30)
    ceiling = min(base_s * 2**exponent, MAX_DELAY_S)
    jitter = (rng or random.Random()).random()
    return float(ceiling * (0.5 + 0.5 * jitter))


@dataclass(frozen=True, slots=True)
class FailureRecord:
    attempts: int
    parked: bool


async def record_failure(
    engine: AsyncEngine,
    event_id: str,
    *,
    error: str,
    max_attempts: int,
    permanent: bool,
    now_ms: int,
) -> FailureRecord | None:
    """Count a failed attempt; park the event as `failed` once its budget is spent.

    Returns None when the event is no longer pending (another job finished it meanwhile).
    """
    attempts = events.c.attempts + 1
    status = "failed" if permanent else case((attempts >= max_attempts, "failed"), else_="pending")
    async with engine.begin() as connection:
        result = await connection.execute(
            update(events)
            .where(events.c.event_id == event_id, events.c.status == "pending")
            .values(
                attempts=attempts,
                last_error=error[:1000],
                status=status,
                updated_ms=now_ms,
            )
        )
        if result.rowcount != 1:
            return None
        row = (
            await connection.execute(
                select(events.c.attempts, events.c.status).where(events.c.event_id == event_id)
            )
        ).one()
    return FailureRecord(attempts=int(row.attempts), parked=row.status == "failed")
