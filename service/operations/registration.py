"""Registering an order: record it, then heal the events that were waiting for it."""

from __future__ import annotations

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.orders import OrderTerms
from service.operations.heal import heal
from service.store.orders import OrderView, add_order
from service.store.outages import STORE_OUTAGE_ERRORS

log = structlog.get_logger("service.operations.registration")


async def register_order(
    engine: AsyncEngine, redis: ArqRedis, terms: OrderTerms, *, now_ms: int
) -> OrderView:
    """Register an order (service.store.orders.add_order; OrderExists when it is taken), then
    enqueue at once the recorded events that named its id or its registered links.

    Healing runs after the order is committed; Redis is touched only when an event waits.
    """
    view = await add_order(engine, terms, now_ms=now_ms)
    links = (terms.payment_intent_id, terms.checkout_session_id)
    keys = [terms.order_id, *(link for link in links if link)]
    try:
        await heal(engine, redis, terms.order_id, keys)
    except STORE_OUTAGE_ERRORS as error:
        # The order is registered: its waiting events still run at their next retry.
        log.warning("heal.skipped", order_id=terms.order_id, error=type(error).__name__)
    return view
