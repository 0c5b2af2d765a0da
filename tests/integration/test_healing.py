"""Unmatched events heal themselves: registering an order, or an event linking an id to one, runs
the events that were waiting for it at once, whether they sat in a retry backoff or were parked.

Real Redis and real databases (SQLite and PostgreSQL). The retry base delay is long (30 s), so an
event that applies within the few seconds the tests wait was healed, not retried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import ORDER_NOT_FOUND, EventStatus
from service.operations.registration import register_order
from service.settings import Settings
from service.store.inbox import EventRecord, get_event, record_failure
from service.store.orders import add_order
from tests.support.flows import (
    Event,
    enqueue,
    event,
    event_ids,
    expected_state,
    new_clock,
    now_ms,
    order_state,
    record,
    refund,
    run_burst_worker,
    sofort_payment,
    statuses,
    terms,
)
from tests.support.waiting import eventually
from workers.errors import OrderNotFound, describe
from workers.healing import heal_if_found_now
from workers.main import WorkerProcess

# Far longer than the tests wait: only healing can apply an event in time.
LONG_BASE_DELAY_S = 30.0
HEALED_WITHIN_S = 8.0
ApplyCheck = Callable[[], Awaitable[bool]]


def patient(settings: Settings, *, max_attempts: int) -> Settings:
    return replace(settings, retry_base_delay_s=LONG_BASE_DELAY_S, retry_max_attempts=max_attempts)


class RunningWorker:
    """A worker process (not burst: deferred jobs must not keep it busy) in this event loop."""

    def __init__(self, settings: Settings, queue_name: str) -> None:
        self.process = WorkerProcess(settings, queue_name=queue_name)
        self.task = asyncio.create_task(self.process.run())

    async def stop(self) -> None:
        self.process.stop()
        await asyncio.wait_for(self.task, timeout=30)


async def recorded(engine: AsyncEngine, event_id: str) -> EventRecord:
    found = await get_event(engine, event_id)
    assert found is not None, event_id
    return found


def has_status(engine: AsyncEngine, event_id: str, status: EventStatus) -> ApplyCheck:
    async def check() -> bool:
        return (await recorded(engine, event_id)).status == status

    return check


def waits_for_order(engine: AsyncEngine, event_id: str) -> ApplyCheck:
    """True once the event failed at least once for want of its order (in backoff, or parked)."""

    async def check() -> bool:
        found = await recorded(engine, event_id)
        return found.attempts >= 1 and (found.last_error or "").startswith(ORDER_NOT_FOUND)

    return check


async def deliver(engine: AsyncEngine, redis: ArqRedis, events: list[Event]) -> None:
    """Record events as the ingress does and enqueue their first jobs."""
    await record(engine, events)
    await enqueue(redis, event_ids(events))


@pytest.mark.parametrize("max_attempts", [8, 1], ids=["in_backoff", "parked"])
async def test_registering_the_order_applies_the_event_waiting_for_it(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str, max_attempts: int
) -> None:
    """An event that failed for want of its order (waiting out a 30 s backoff, or parked) is
    applied within seconds of the order's registration."""
    settings = patient(settings, max_attempts=max_attempts)
    order_id = "ord_heal_late"
    payment = event(new_clock(), "payment_intent.succeeded", order_id)
    await deliver(engine, redis, [payment])
    worker = RunningWorker(settings, queue_name)
    try:
        await eventually(waits_for_order(engine, payment["id"]))
        if max_attempts == 1:
            await eventually(has_status(engine, payment["id"], EventStatus.FAILED))

        await register_order(engine, redis, terms(order_id), now_ms=now_ms())

        await eventually(
            has_status(engine, payment["id"], EventStatus.PROCESSED), timeout_s=HEALED_WITHIN_S
        )
    finally:
        await worker.stop()
    assert await order_state(engine, order_id) == expected_state(terms(order_id), [payment])
    assert (await order_state(engine, order_id)).status == "paid"


@pytest.mark.parametrize("max_attempts", [8, 1], ids=["in_backoff", "parked"])
async def test_a_refund_before_its_payment_heals_when_the_payment_links_it(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str, max_attempts: int
) -> None:
    """A refund that arrived before the event linking its PaymentIntent applies, counted once,
    as soon as that event applies."""
    settings = patient(settings, max_attempts=max_attempts)
    order_id = "ord_heal_refund"
    clock = new_clock()
    payment = sofort_payment(clock, order_id)
    early_refund = refund(clock, order_id, f"re_{order_id}", 2_500)
    await register_order(engine, redis, terms(order_id), now_ms=now_ms())
    await deliver(engine, redis, [early_refund])
    worker = RunningWorker(settings, queue_name)
    try:
        await eventually(waits_for_order(engine, early_refund["id"]))
        if max_attempts == 1:
            await eventually(has_status(engine, early_refund["id"], EventStatus.FAILED))

        await deliver(engine, redis, payment)

        await eventually(
            has_status(engine, early_refund["id"], EventStatus.PROCESSED),
            timeout_s=HEALED_WITHIN_S,
        )
        await eventually(all_processed(engine), timeout_s=HEALED_WITHIN_S)
    finally:
        await worker.stop()
    state = await order_state(engine, order_id)
    assert state == expected_state(terms(order_id), [*payment, early_refund])
    assert (state.status, state.amount_refunded) == ("partially_refunded", 2_500)


def all_processed(engine: AsyncEngine) -> ApplyCheck:
    async def check() -> bool:
        return set((await statuses(engine)).values()) == {EventStatus.PROCESSED}

    return check


SEEDS = range(3)


async def test_registration_at_random_moments_always_ends_in_the_projection(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """Whenever the order is registered around its events' arrival, every event applies within
    seconds and the order equals the projection of its events."""
    settings = patient(settings, max_attempts=2)
    worker = RunningWorker(settings, queue_name)
    try:
        for seed in SEEDS:
            rng = random.Random(seed)
            order_id = f"ord_heal_random_{seed}"
            clock = new_clock()
            events = [*sofort_payment(clock, order_id), refund(clock, order_id, f"re_{seed}", 900)]
            rng.shuffle(events)
            register_at = rng.randrange(len(events) + 1)
            for index in range(len(events) + 1):
                # Random gaps between arrivals: the schedule under test, not a wait.
                await asyncio.sleep(rng.uniform(0, 0.3))
                if index == register_at:
                    await register_order(engine, redis, terms(order_id), now_ms=now_ms())
                if index < len(events):
                    await deliver(engine, redis, [events[index]])
            await eventually(all_processed(engine), timeout_s=HEALED_WITHIN_S)
            state = await order_state(engine, order_id)
            assert state == expected_state(terms(order_id), events), seed
    finally:
        await worker.stop()


async def test_an_event_for_an_unknown_order_stays_failed(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """Registering other orders neither reopens nor enqueues an event whose order is unknown."""
    settings = patient(settings, max_attempts=1)
    orphan = event(new_clock(), "payment_intent.succeeded", "ord_never_registered")
    await deliver(engine, redis, [orphan])
    await run_burst_worker(settings, queue_name)
    assert (await recorded(engine, orphan["id"])).status == EventStatus.FAILED

    for number in range(3):
        await register_order(engine, redis, terms(f"ord_other_{number}"), now_ms=now_ms())

    assert await redis.zcard(queue_name) == 0
    await run_burst_worker(settings, queue_name)
    parked = await recorded(engine, orphan["id"])
    assert (parked.status, parked.attempts) == (EventStatus.FAILED, 1)


async def test_the_second_look_heals_an_event_whose_order_came_between(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """An order registered after an event missed it, but before the event's keys were recorded
    (so its registration found nothing to heal), is found by the worker's second look."""
    order_id = "ord_heal_between"
    payment = event(new_clock(), "payment_intent.succeeded", order_id)
    await record(engine, [payment])
    # The registration lands here, between the missed lookup and the recorded failure.
    await add_order(engine, terms(order_id), now_ms=now_ms())
    missed = OrderNotFound("no order yet", order_ids=[order_id])
    attempts = await record_failure(
        engine,
        payment["id"],
        error=describe(missed),
        parks=lambda _: True,
        now_ms=now_ms(),
        unmatched_keys=missed.keys,
    )
    assert attempts == 1
    assert (await recorded(engine, payment["id"])).status == EventStatus.FAILED

    await heal_if_found_now({"redis": redis}, engine, missed)

    assert (await recorded(engine, payment["id"])).status == EventStatus.PENDING
    jobs = [job.decode() for job in await redis.zrange(queue_name, 0, -1)]
    assert len(jobs) == 1, jobs
    assert jobs[0].startswith(f"evt:{payment['id']}:replay:"), jobs
    await run_burst_worker(settings, queue_name)
    assert (await order_state(engine, order_id)).status == "paid"
