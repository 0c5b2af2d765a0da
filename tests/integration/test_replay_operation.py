"""The replay operation tells a Redis outage from a store failure (real stores, real Redis)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import free_port
from service.domain.event_status import EventStatus
from service.operations.replay import QueueUnavailable, ReplayPlan, execute_replay, plan_replay
from service.queue import create_redis, queue_depth
from service.store.engine import create_engine
from service.store.inbox import EventRecord, get_event, record_failure
from tests.support.flows import event, new_clock, record


async def _failed_event(engine: AsyncEngine) -> str:
    """One recorded event parked as `failed`."""
    item = event(new_clock(), "payment_intent.succeeded", "order_replay")
    await record(engine, [item])
    event_id = str(item["id"])
    await record_failure(engine, event_id, error="boom", parks=lambda _: True, now_ms=1)
    return event_id


async def test_redis_down_reopens_the_events_and_says_the_queue_is_unavailable(
    engine: AsyncEngine,
) -> None:
    """With Redis unreachable, the failed events are reopened as pending (for the sweeper) and
    the operation raises QueueUnavailable, not a store error."""
    event_id = await _failed_event(engine)
    plan = await plan_replay(engine, failed=True)
    redis = create_redis(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(QueueUnavailable):
            await execute_replay(engine, redis, plan)
    finally:
        await redis.aclose()
    record_after = await get_event(engine, event_id)
    assert record_after is not None
    assert record_after.status == EventStatus.PENDING


async def test_a_store_failure_is_reported_as_the_stores(tmp_path: Path, redis_url: str) -> None:
    """A store that fails while reopening (here: never migrated) raises its own error, never
    QueueUnavailable, and nothing is enqueued."""
    unmigrated = create_engine(f"sqlite:///{tmp_path / 'never-migrated.db'}")
    queue_name = f"wooshpay:test:{uuid.uuid4().hex}"
    redis = create_redis(redis_url, queue_name=queue_name)
    planned = EventRecord(
        "evt_elsewhere", "payment_intent.succeeded", EventStatus.FAILED, 3, "boom", None, 1, 1, 1
    )
    try:
        with pytest.raises(SQLAlchemyError):
            await execute_replay(unmigrated, redis, ReplayPlan([planned]))
        assert await queue_depth(redis) == 0
    finally:
        await redis.delete(queue_name)
        await redis.aclose()
        await unmigrated.dispose()
