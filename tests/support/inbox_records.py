"""Recording events in the inbox directly, as the ingress's group commit would (for tests and
benchmarks that start from recorded events rather than deliveries)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.inbox import NewEvent, first_new, record_new_events


async def record_events(
    engine: AsyncEngine, batch: Sequence[NewEvent], *, now_ms: int
) -> list[bool]:
    """Insert-or-ignore a batch with the ingress's statement; True where the event id was new
    (for an id given twice, its first occurrence)."""
    return first_new(batch, await record_new_events(engine, batch, now_ms=now_ms))


async def record_event(engine: AsyncEngine, item: NewEvent, *, now_ms: int) -> bool:
    (is_new,) = await record_events(engine, [item], now_ms=now_ms)
    return is_new
