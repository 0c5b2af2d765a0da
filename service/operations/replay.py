"""Replaying recorded events: reopen failed ones and enqueue them under fresh job ids."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.queue import QUEUE_ERRORS, enqueue_now
from service.store.inbox import EventRecord, get_event, list_events, reopen_for_replay


class QueueUnavailable(Exception):
    """Redis did not take the replayed events. They were reopened as `pending` first, so the
    sweeper enqueues them once Redis is back: nothing is lost, only delayed."""


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    events: list[EventRecord]
    unknown_ids: list[str] = field(default_factory=list)


async def plan_replay(
    engine: AsyncEngine,
    *,
    event_ids: Sequence[str] = (),
    failed: bool = False,
    event_type: str | None = None,
) -> ReplayPlan:
    """Which recorded events a replay would touch (by id, or every `failed` one)."""
    if failed:
        return ReplayPlan(
            await list_events(engine, status=EventStatus.FAILED, event_type=event_type)
        )
    found: list[EventRecord] = []
    unknown: list[str] = []
    for event_id in dict.fromkeys(event_ids):
        record = await get_event(engine, event_id)
        if record is None:
            unknown.append(event_id)
        elif event_type is None or record.type == event_type:
            found.append(record)
    return ReplayPlan(found, unknown)


async def execute_replay(engine: AsyncEngine, redis: ArqRedis, plan: ReplayPlan) -> int:
    """Reopen the plan's failed events and enqueue every one; return how many were enqueued.

    Fresh job ids, so arq never swallows a replay; an event already applied is enqueued too and
    its job changes nothing (the inbox row says `processed`). Raises QueueUnavailable when Redis
    does not take them (they are then reopened and left to the sweeper).
    """
    event_ids = [record.event_id for record in plan.events]
    # Store errors here are the store's, and reach the caller as they are.
    await reopen_for_replay(engine, event_ids, now_ms=int(time.time() * 1000))
    try:
        return await enqueue_now(redis, event_ids)
    except QUEUE_ERRORS as error:
        raise QueueUnavailable(type(error).__name__) from error
