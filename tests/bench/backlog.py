"""Putting work in place without the ingress: registered orders, recorded events, queued jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Final

from sqlalchemy import func, insert, select

from service.devtools.sender import EventOptions, build_event
from service.domain.event_status import EventStatus
from service.domain.orders import OrderTerms, initial_state
from service.queue import create_redis, enqueue_events
from service.store.engine import create_engine
from service.store.inbox import NewEvent, record_new_events
from service.store.schema import events, order_links, orders
from service.wooshpay.events import parse_envelope
from tests.bench.load import event_bodies

CHUNK: Final = 500
ORDER_AMOUNT: Final = 2000
POLL_S: Final = 0.02


async def register_orders(database_url: str, order_ids: Sequence[str]) -> None:
    """Orders as `orders add ID --amount 2000 --currency EUR --payment-intent PI` leaves them,
    inserted in bulk. Registering the PaymentIntent lets a refund that is applied before the
    order's payment events still find its order (else it would wait for a retry)."""
    now_ms = int(time.time() * 1000)
    order_rows, link_rows = [], []
    for order_id in order_ids:
        terms = OrderTerms(order_id, ORDER_AMOUNT, "EUR", payment_intent_id=_intent_of(order_id))
        state = initial_state(terms)
        order_rows.append(
            {
                "order_id": order_id,
                "amount": ORDER_AMOUNT,
                "currency": "EUR",
                "registered_payment_intent_id": terms.payment_intent_id,
                "status": state.status,
                "payment_intent_id": state.payment_intent_id,
                "created_ms": now_ms,
                "updated_ms": now_ms,
            }
        )
        link_rows.append(
            {"external_id": terms.payment_intent_id, "kind": "payment_intent", "order_id": order_id}
        )
    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            for table, rows in ((orders, order_rows), (order_links, link_rows)):
                for start in range(0, len(rows), CHUNK):
                    await connection.execute(insert(table), rows[start : start + CHUNK])
    finally:
        await engine.dispose()


def _intent_of(order_id: str) -> str:
    """The PaymentIntent id the sender gives every event of this order."""
    event = build_event("payment_intent.created", EventOptions(order_id=order_id), now_ms=0)
    return str(event["data"]["object"]["id"])


async def record_events(database_url: str, count: int, order_ids: Sequence[str]) -> list[str]:
    """`count` events for the orders, recorded `pending` as the ingress records them."""
    now_ms = int(time.time() * 1000)
    items = [
        NewEvent(parse_envelope(body), body, EventStatus.PENDING)
        for body in event_bodies(count, orders=order_ids, now_ms=now_ms)
    ]
    engine = create_engine(database_url)
    try:
        for start in range(0, len(items), CHUNK):
            await record_new_events(engine, items[start : start + CHUNK], now_ms=now_ms)
    finally:
        await engine.dispose()
    return [item.event.event_id for item in items]


async def enqueue_gated(redis_url: str, event_ids: Sequence[str], *, gate_ms: int) -> None:
    """Enqueue the reconcile jobs, runnable only from `gate_ms` on: workers that start before the
    gate all begin together, so their start-up is not part of the measurement."""
    redis = create_redis(redis_url)
    try:
        for start in range(0, len(event_ids), CHUNK):
            await enqueue_events(redis, event_ids[start : start + CHUNK])
        members = await redis.zrange(redis.default_queue_name, 0, -1)
        await redis.zadd(redis.default_queue_name, dict.fromkeys(members, gate_ms), xx=True)
    finally:
        await redis.aclose()


async def wait_until_settled(
    database_url: str, total: int, *, timeout_s: float, on_tick: Callable[[], None]
) -> tuple[float, dict[str, int]]:
    """Poll the inbox until `total` events left `pending`; return when that was first seen
    (epoch seconds) and the counts by status. Calls `on_tick` between polls (RSS sampling)."""
    engine = create_engine(database_url)
    query = select(events.c.status, func.count()).group_by(events.c.status)
    deadline = time.monotonic() + timeout_s
    try:
        async with engine.connect() as connection:
            while True:
                rows = (await connection.execute(query)).all()
                await connection.rollback()  # a fresh snapshot on the next poll
                counts = {str(status): int(count) for status, count in rows}
                settled = total - counts.get("pending", 0)
                if settled >= total or time.monotonic() > deadline:
                    return time.time(), counts
                on_tick()
                await asyncio.sleep(POLL_S)
    finally:
        await engine.dispose()
