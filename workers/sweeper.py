"""The sweeper: re-enqueues recorded events that no job is carrying.

Redis is the fast path, not the only copy. A `pending` inbox row whose job is gone (Redis flushed
or restarted, the ingress could not reach Redis, arq dropped a job on its final try) is found here
and enqueued again under its stable job id, which arq refuses while a job is still in flight.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

import structlog
from arq.connections import ArqRedis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.queue import enqueue_event
from service.store.inbox import pending_event_ids
from workers.errors import INFRASTRUCTURE_ERRORS
from workers.metrics import WorkerMetrics

log = structlog.get_logger("workers.sweeper")

# Events younger than this are left to the ingress's own enqueue.
MIN_AGE_S: Final = 5.0
BATCH_LIMIT: Final = 1000


async def sweep_once(
    engine: AsyncEngine, redis: ArqRedis, *, min_age_s: float = MIN_AGE_S, now: float | None = None
) -> int:
    """Enqueue every pending event older than `min_age_s`; return how many jobs were created."""
    received_before_ms = int(((now if now is not None else time.time()) - min_age_s) * 1000)
    event_ids = await pending_event_ids(
        engine, received_before_ms=received_before_ms, limit=BATCH_LIMIT
    )
    enqueued = 0
    for event_id in event_ids:
        if await enqueue_event(redis, event_id):
            enqueued += 1
    if enqueued:
        log.info("sweep.enqueued", count=enqueued, pending_seen=len(event_ids))
    return enqueued


async def run_sweeper(
    engine: AsyncEngine, redis: ArqRedis, *, interval_s: float, metrics: WorkerMetrics
) -> None:
    """Sweep every `interval_s` until cancelled; an outage only skips a round."""
    while True:
        try:
            metrics.swept.inc(await sweep_once(engine, redis))
        except (*INFRASTRUCTURE_ERRORS, RedisError) as error:
            log.warning("sweep.skipped", error=type(error).__name__)
        await asyncio.sleep(interval_s)
