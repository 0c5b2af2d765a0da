"""The worker's part in healing (service.operations.heal): after an event links an id to its
order, and after an event fails to find its order.

Both run after their transaction committed, and both only hasten an event: a failure here is
logged and the events run at their next retry, or after a replay, as they would without it.
"""

from __future__ import annotations

from typing import Any

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.operations.heal import heal
from service.store.orders import order_for_keys
from service.store.outages import STORE_OUTAGE_ERRORS
from workers.apply import ApplyResult
from workers.errors import OrderNotFound

log = structlog.get_logger("workers.healing")

# arq's context key for the worker's Redis pool (the one its jobs are enqueued on).
REDIS_KEY = "redis"


async def heal_after_link(ctx: dict[str, Any], engine: AsyncEngine, result: ApplyResult) -> None:
    """Run the events that were waiting for an id this event just linked (a refund that
    arrived before the payment naming its PaymentIntent)."""
    redis = _redis(ctx)
    if redis is None or not result.linked or result.order_id is None:
        return
    await _heal_quietly(engine, redis, result.order_id, result.linked)


async def heal_if_found_now(ctx: dict[str, Any], engine: AsyncEngine, error: OrderNotFound) -> None:
    """The second look, once the failure and the event's keys are committed: if the order
    appeared meanwhile, its registration may have looked for keys before they were there."""
    redis = _redis(ctx)
    if redis is None or not error.keys:
        return
    try:
        order_id = await order_for_keys(engine, error.order_ids, error.linked_ids)
    except STORE_OUTAGE_ERRORS as outage:
        log.warning("heal.skipped", error=type(outage).__name__)
        return
    if order_id is not None:
        await _heal_quietly(engine, redis, order_id, error.keys)


async def _heal_quietly(
    engine: AsyncEngine, redis: ArqRedis, order_id: str, keys: tuple[str, ...]
) -> None:
    try:
        await heal(engine, redis, order_id, keys)
    except STORE_OUTAGE_ERRORS as outage:
        log.warning("heal.skipped", order_id=order_id, error=type(outage).__name__)


def _redis(ctx: dict[str, Any]) -> ArqRedis | None:
    redis = ctx.get(REDIS_KEY)
    return redis if isinstance(redis, ArqRedis) else None
