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

from service.queue import enqueue_events
from service.store.inbox import pending_event_ids
from service.store.outages import STORE_OUTAGE_ERRORS
from service.timeouts import SWEEP_MIN_AGE_S as MIN_AGE_S
from service.timeouts import SWEEP_ROUND_TIMEOUT_S as ROUND_TIMEOUT_S
from workers.metrics import WorkerMetrics

log = structlog.get_logger("workers.sweeper")

BATCH_LIMIT: Final = 1000


async def sweep_once(
    engine: AsyncEngine, redis: ArqRedis, *, min_age_s: float = MIN_AGE_S, now: float | None = None
) -> int:
    """Enqueue every pending event older than `min_age_s`; return how many jobs were created."""
    received_before_ms = int(((now if now is not None else time.time()) - min_age_s) * 1000)
    enqueued = seen = 0
    after: tuple[int, str] | None = None
    # Page through every pending event: the oldest ones may all still hold a job (waiting out a
    # retry backoff), and newer ones whose job was lost must not wait behind them.
    while page := await pending_event_ids(
        engine, received_before_ms=received_before_ms, limit=BATCH_LIMIT, after=after
    ):
        enqueued += await enqueue_events(redis, [event_id for _, event_id in page])
        seen += len(page)
        after = page[-1]
    if enqueued:
        log.info("sweep.enqueued", count=enqueued, pending_seen=seen)
    return enqueued


async def run_sweeper(
    engine: AsyncEngine, redis: ArqRedis, *, interval_s: float, metrics: WorkerMetrics
) -> None:
    """Sweep every `interval_s` until cancelled; an outage, or even a bug, only skips a round
    (the sweeper is what finds events whose job was lost: it must outlive any one failure)."""
    while True:
        try:
            async with asyncio.timeout(ROUND_TIMEOUT_S):
                swept = await sweep_once(engine, redis)
            metrics.swept.inc(swept)
        except (*STORE_OUTAGE_ERRORS, RedisError) as error:
            log.warning("sweep.skipped", error=type(error).__name__)
        except Exception as error:
            log.exception("sweep.error", error=type(error).__name__)
        await asyncio.sleep(interval_s)
