"""Healing: events that waited for their order run as soon as it can be found.

An event whose order cannot be found yet is retried with backoff, then parked `failed`
(`order_not_found`). When an order is registered, or an applied event links a PaymentIntent or
Checkout Session id to one, the events that named the order id or that linked id are reopened
(if parked) and enqueued under fresh job ids, so they run now rather than after their backoff;
a job still deferred for one of them later finds it `processed` and changes nothing.

Why none is missed: the worker records an event's keys and commits them before it looks again
for the order (workers.healing), and healing looks for keys only after the order or its link
was committed. So either the worker's second look finds the order, or healing finds the keys.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.queue import QUEUE_ERRORS, enqueue_now
from service.store.inbox import reopen_unmatched

log = structlog.get_logger("service.operations.heal")


async def heal(engine: AsyncEngine, redis: ArqRedis, order_id: str, keys: Sequence[str]) -> int:
    """Reopen and enqueue the events waiting for `order_id` that named any of `keys` (its id,
    ids just linked to it); return how many were enqueued.

    Store errors reach the caller. If Redis does not take the jobs the events are `pending`
    all the same, and the sweeper enqueues them (`heal.deferred`).
    """
    event_ids = await reopen_unmatched(engine, keys, now_ms=int(time.time() * 1000))
    if not event_ids:
        return 0
    try:
        enqueued = await enqueue_now(redis, event_ids)
    except QUEUE_ERRORS as error:
        # Some may have gone in before Redis failed; every one is `pending`, so the sweeper
        # enqueues whatever is not queued.
        log.warning(
            "heal.deferred", order_id=order_id, count=len(event_ids), error=type(error).__name__
        )
        return 0
    if enqueued:
        log.info("heal.enqueued", order_id=order_id, count=enqueued)
    return enqueued
