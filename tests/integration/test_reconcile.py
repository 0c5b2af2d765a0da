"""Reconciliation end to end: ingress -> inbox -> arq -> workers -> order store.

Real Redis (a per-test queue on the shared server, or a private redis-server where the default
queue name must be used) and real databases (SQLite and PostgreSQL, via the `engine` fixture).
"""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, start_local_redis
from service.devtools.sender import EventOptions, build_event, encode_event
from service.domain import OrderState, RefundState
from service.domain.event_status import EventStatus
from service.ingress.app import create_app
from service.operations.replay import execute_replay, plan_replay
from service.queue import DEFAULT_QUEUE_NAME, create_redis
from service.secrets import SecretUrl
from service.settings import Settings
from service.store.inbox import NewEvent, get_event, list_events
from service.store.orders import add_order
from service.wooshpay.events import parse_envelope
from tests.support import databases
from tests.support.flows import (
    AMOUNT,
    PATIENT_ATTEMPTS,
    Event,
    applied_counts,
    close_redis,
    enqueue,
    event_ids,
    expected_state,
    log_entries,
    many_events_flow,
    new_clock,
    now_ms,
    order_state,
    order_version,
    order_view,
    outcome_count,
    post_event,
    post_events,
    record,
    register_order,
    run_burst_worker,
    sofort_flow,
    sofort_payment,
    start_cli_worker,
    statuses,
    stop_process,
    terms,
    worker_env,
)
from tests.support.inbox_records import record_event
from tests.support.waiting import eventually
from workers.apply import apply_event
from workers.main import WorkerProcess
from workers.metrics import WorkerMetrics

Client = TestClient[web.Request, web.Application]
SUBPROCESS_TIMEOUT_S = 90.0


@pytest_asyncio.fixture
async def client(settings: Settings, engine: AsyncEngine, redis: ArqRedis) -> AsyncIterator[Client]:
    """The ingress app on a test server, sharing the test's store and queue."""
    app = create_app(settings, engine=engine, redis=redis)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    """A private redis-server, so the CLI worker's default queue name is ours alone."""
    server = start_local_redis()
    try:
        yield server
    finally:
        server.stop()


def secret_of(settings: Settings) -> str:
    return settings.webhook_secrets[0].reveal()


# Jobs released at once in the racing tests: each job holds a database connection while it
# waits for the order's row lock, and the PostgreSQL server is shared.
RELEASE_BATCH = 25
DEFER_S = 3600.0


def deliveries(events: list[Event], rng: random.Random) -> list[str]:
    """Every event id once, about half of them a second time, shuffled."""
    ids = event_ids(events)
    plan = ids + [event_id for event_id in ids if rng.random() < 0.5]
    rng.shuffle(plan)
    return plan


async def record_and_enqueue(
    engine: AsyncEngine,
    redis: ArqRedis,
    events: list[Event],
    plan: list[str],
    *,
    defer_s: float | None = None,
) -> int:
    """Record events in the order of `plan`, then enqueue one job per delivery in `plan`.

    A redelivered id gets a fresh job id (as a replay does), so duplicate jobs really run.
    Returns the number of jobs enqueued.
    """
    by_id = {str(e["id"]): e for e in events}
    await record(engine, [by_id[event_id] for event_id in plan])
    seen: set[str] = set()
    jobs = 0
    for event_id in plan:
        jobs += await enqueue(redis, [event_id], fresh_job_ids=event_id in seen, defer_s=defer_s)
        seen.add(event_id)
    return jobs


async def release_deferred(redis: ArqRedis, queue_name: str, *, batch: int) -> None:
    """Make deferred jobs due `batch` at a time, each batch once the one before it has run.

    Burst workers keep polling while deferred jobs exist, so workers started first all see the
    jobs become due together: they race.
    """
    members = [m.decode() for m in await redis.zrange(queue_name, 0, -1)]
    assert members, "no deferred jobs to release"
    for start in range(0, len(members), batch):
        chunk = members[start : start + batch]
        await redis.zadd(queue_name, dict.fromkeys(chunk, now_ms()), xx=True)

        async def chunk_done(chunk: list[str] = chunk) -> bool:
            return all(score is None for score in await redis.zmscore(queue_name, chunk))

        await eventually(chunk_done, timeout_s=60)


async def test_sofort_flow_through_ingress(
    client: Client, engine: AsyncEngine, settings: Settings, queue_name: str
) -> None:
    """A SOFORT payment and its refunds posted to the ingress move the order step by step."""
    order_id = "ord_sofort_1"
    flow = sofort_flow(order_id)
    await register_order(engine, order_id)
    expected_steps = [
        ("pending", 0, 0),
        ("requires_action", 0, 0),
        ("processing", 0, 0),
        ("paid", AMOUNT, 0),
        ("paid", AMOUNT, 0),  # refund 1 pending: no money back yet
        ("partially_refunded", AMOUNT, 2_500),
        ("partially_refunded", AMOUNT, 4_000),
        ("refunded", AMOUNT, AMOUNT),
    ]
    seen: list[tuple[str, int, int]] = []
    for item in flow.all_events:
        answer = await post_event(client, item, secret_of(settings))
        assert answer == {"received": True, "event_id": item["id"], "duplicate": False}
        await run_burst_worker(settings, queue_name)
        state = await order_state(engine, order_id)
        seen.append((state.status, state.amount_received, state.amount_refunded))
        if len(seen) == len(flow.up_to_partial):
            assert state.refunds == (
                RefundState(f"re_{order_id}_1", 2_500, "succeeded"),
                RefundState(f"re_{order_id}_2", 1_500, "succeeded"),
            )
            assert state.amount_refunded == flow.refunded_partially
    assert seen == expected_steps

    final = await order_state(engine, order_id)
    assert final.payment_intent_id == payment_intent_of(flow.payment)
    assert final.needs_review is False
    assert [r.refund_id for r in final.refunds] == [f"re_{order_id}_{n}" for n in (1, 2, 3)]
    assert final == expected_state(terms(order_id), flow.all_events)
    records = await list_events(engine)
    assert {r.event_id for r in records} == set(event_ids(flow.all_events))
    assert all(r.status == "processed" and r.order_id == order_id for r in records), records
    # Delivered one at a time, in order: every event applied at its first attempt.
    assert all(r.attempts == 1 and r.last_error is None for r in records), records


async def test_redelivery_and_replay_change_nothing(
    client: Client,
    engine: AsyncEngine,
    settings: Settings,
    redis: ArqRedis,
    queue_name: str,
) -> None:
    """Events delivered again and replayed leave the applied order row untouched."""
    order_id = "ord_idem_1"
    flow = sofort_flow(order_id)
    await register_order(engine, order_id)
    await post_events(client, flow.all_events, secret_of(settings))
    await run_burst_worker(replace(settings, retry_max_attempts=PATIENT_ATTEMPTS), queue_name)
    before = await order_view(engine, order_id)
    version = await order_version(engine, order_id)
    records_before = await list_events(engine)
    assert before.state.status == "refunded"
    assert version >= 1
    assert {r.status for r in records_before} == {"processed"}

    answers = await post_events(client, flow.all_events, secret_of(settings))
    assert all(answer["duplicate"] is True for answer in answers), answers
    assert await redis.zcard(queue_name) == 0  # a redelivery enqueues nothing

    ids = event_ids(flow.all_events)
    plan = await plan_replay(engine, event_ids=ids)
    assert [r.event_id for r in plan.events] == ids
    assert plan.unknown_ids == []
    assert await execute_replay(engine, redis, plan) == len(ids)
    assert await redis.zcard(queue_name) == len(ids)

    metrics = WorkerMetrics()
    await run_burst_worker(settings, queue_name, metrics=metrics)
    assert outcome_count(metrics, "duplicate") == len(ids)
    assert outcome_count(metrics, "applied") == outcome_count(metrics, "stale") == 0
    assert await order_version(engine, order_id) == version
    assert await order_view(engine, order_id) == before  # state and updated_ms
    assert await list_events(engine) == records_before  # status, attempts, updated_ms


async def test_shuffled_duplicated_delivery_matches_in_order(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """The same events shuffled and duplicated give the order they give in order."""
    order_id = "ord_shuffle_1"
    flow = sofort_flow(order_id)
    events = flow.all_events
    order_terms = await register_order(engine, order_id)
    # Reference: every event applied one at a time, in order.
    await record(engine, events)
    for event_id in event_ids(events):
        result = await apply_event(engine, event_id, now_ms=now_ms())
        assert result.outcome == "applied", (event_id, result)
    in_order = await order_state(engine, order_id)
    assert in_order.status == "refunded"

    for seed in (11, 4242, 90210):
        await databases.truncate_all(engine)
        await register_order(engine, order_id)
        plan = deliveries(events, random.Random(seed))
        assert plan != event_ids(events)
        jobs = await record_and_enqueue(engine, redis, events, plan)
        assert jobs == len(plan)
        metrics = WorkerMetrics()
        patient = replace(settings, retry_max_attempts=PATIENT_ATTEMPTS)
        await run_burst_worker(patient, queue_name, metrics=metrics)

        assert await order_state(engine, order_id) == in_order, seed
        assert set((await statuses(engine)).values()) == {"processed"}, seed
        applied = outcome_count(metrics, "applied") + outcome_count(metrics, "stale")
        assert applied == len(events), seed
        # Every redelivery ends as a duplicate; so may the retry of a refund that beat the link
        # of its payment, once healing has run it under a fresh job id.
        assert outcome_count(metrics, "duplicate") >= len(plan) - len(events), seed
    assert in_order == expected_state(order_terms, events)


def payment_intent_of(events: list[Event]) -> str:
    return str(events[0]["data"]["object"]["id"])


async def single_worker_reference(
    engine: AsyncEngine,
    settings: Settings,
    redis: ArqRedis,
    queue_name: str,
    events: list[Event],
    plan: list[str],
) -> OrderState:
    """The order one burst worker makes of `plan`; the store is emptied again afterwards."""
    order_id = str(events[0]["data"]["object"]["merchant_order_id"])
    await register_order(engine, order_id, payment_intent=payment_intent_of(events))
    await record_and_enqueue(engine, redis, events, plan)
    await run_burst_worker(settings, queue_name)
    state = await order_state(engine, order_id)
    await assert_all_processed(engine, events)
    await databases.truncate_all(engine)
    return state


async def assert_all_processed(engine: AsyncEngine, events: list[Event]) -> None:
    records = {r.event_id: r for r in await list_events(engine)}
    assert set(records) == set(event_ids(events))
    not_processed = [r for r in records.values() if r.status != "processed"]
    assert not_processed == [], not_processed


async def test_four_workers_racing_in_one_loop(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """Four burst workers racing over 50 shuffled, duplicated events apply each exactly once."""
    order_id = "ord_race_1"
    events = many_events_flow(order_id)
    assert len(events) == 50
    plan = deliveries(events, random.Random(7))
    reference = await single_worker_reference(engine, settings, redis, queue_name, events, plan)
    # The order is registered with its PaymentIntent, so no refund waits for a link: the
    # subject here is the race, not linking.
    order_terms = await register_order(engine, order_id, payment_intent=payment_intent_of(events))
    jobs = await record_and_enqueue(engine, redis, events, plan, defer_s=DEFER_S)
    assert jobs == len(plan)

    all_metrics = [WorkerMetrics() for _ in range(4)]
    processes = [
        WorkerProcess(settings, queue_name=queue_name, burst=True, metrics=m) for m in all_metrics
    ]
    await asyncio.wait_for(
        asyncio.gather(
            *(p.run() for p in processes),
            release_deferred(redis, queue_name, batch=RELEASE_BATCH),
        ),
        timeout=90,
    )

    state = await order_state(engine, order_id)
    assert state == reference
    assert state == expected_state(order_terms, events)
    assert state.status == "partially_refunded"
    await assert_all_processed(engine, events)
    assert await redis.zcard(queue_name) == 0
    applied = sum(outcome_count(m, "applied") + outcome_count(m, "stale") for m in all_metrics)
    duplicates = sum(outcome_count(m, "duplicate") for m in all_metrics)
    assert applied == len(events)
    assert duplicates == len(plan) - len(events)
    assert sum(outcome_count(m, "retry") + outcome_count(m, "failed") for m in all_metrics) == 0
    # The race happened at all: more than one worker did some of the work.
    assert sum(1 for p in processes if p.jobs_complete > 0) >= 2, [
        p.jobs_complete for p in processes
    ]


@pytest.mark.slow
async def test_four_worker_processes_racing(
    engine: AsyncEngine,
    settings: Settings,
    store_url: str,
    private_redis: LocalRedis,
    tmp_path: Path,
) -> None:
    """Four CLI worker processes on one queue give the single-worker result, each event once."""
    order_id = "ord_race_2"
    events = many_events_flow(order_id)
    plan = deliveries(events, random.Random(99))
    private = replace(settings, redis_url=SecretUrl(private_redis.url))
    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    pool = create_redis(private_redis.url, queue_name=DEFAULT_QUEUE_NAME)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        reference = await single_worker_reference(
            engine, private, pool, DEFAULT_QUEUE_NAME, events, plan
        )
        order_terms = await register_order(
            engine, order_id, payment_intent=payment_intent_of(events)
        )
        jobs = await record_and_enqueue(engine, pool, events, plan, defer_s=DEFER_S)
        assert jobs == len(plan)

        env = worker_env(store_url, private_redis.url)
        processes = [start_cli_worker(env, log) for log in logs]

        async def all_started() -> bool:
            return all(
                any(e.get("event", "").startswith("Starting worker") for e in log_entries([log]))
                for log in logs
            )

        await eventually(all_started, timeout_s=SUBPROCESS_TIMEOUT_S)
        await release_deferred(pool, DEFAULT_QUEUE_NAME, batch=RELEASE_BATCH)
        returncodes = await asyncio.to_thread(wait_all, processes)
        assert returncodes == [0, 0, 0, 0], [log.read_text()[-2000:] for log in logs]
        assert await pool.zcard(DEFAULT_QUEUE_NAME) == 0
    finally:
        await asyncio.to_thread(stop_all, processes)
        await close_redis(pool)

    state = await order_state(engine, order_id)
    assert state == reference
    assert state == expected_state(order_terms, events)
    await assert_all_processed(engine, events)
    # Each event applied exactly once across the four processes, by their log lines.
    applied = applied_counts(logs)
    assert applied == dict.fromkeys(event_ids(events), 1), applied
    assert sum(1 for log in logs if applied_counts([log])) >= 2, "only one worker did anything"


def stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        stop_process(process)


def wait_all(processes: list[subprocess.Popen[bytes]]) -> list[int | None]:
    """Wait for every process (each within the deadline); their exit codes."""
    for process in processes:
        process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    return [process.returncode for process in processes]


async def test_unknown_order_is_parked_then_replayed(
    engine: AsyncEngine, settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """Events for an unregistered order end failed (order_not_found) and apply after a replay."""
    order_id = "ord_late_1"
    events = sofort_payment(new_clock(), order_id)
    ids = event_ids(events)
    await record(engine, events)
    await enqueue(redis, ids)
    await run_burst_worker(settings, queue_name)

    for event_id in ids:
        parked = await get_event(engine, event_id)
        assert parked is not None
        assert parked.status == "failed", parked
        assert parked.attempts == settings.retry_max_attempts, parked
        assert parked.order_id is None
        assert parked.last_error is not None
        assert "order_not_found" in parked.last_error, parked.last_error

    order_terms = terms(order_id)
    await add_order(engine, order_terms, now_ms=now_ms())
    plan = await plan_replay(engine, failed=True)
    assert sorted(r.event_id for r in plan.events) == sorted(ids)
    assert await execute_replay(engine, redis, plan) == len(ids)
    await run_burst_worker(settings, queue_name)

    state = await order_state(engine, order_id)
    assert state.status == "paid"
    assert state.amount_received == AMOUNT
    assert state == expected_state(order_terms, events)
    records = await list_events(engine)
    assert all(r.status == "processed" and r.order_id == order_id for r in records), records


async def test_unparsable_object_is_parked_at_once(
    client: Client, engine: AsyncEngine, settings: Settings, queue_name: str
) -> None:
    """An in-scope event whose object cannot be parsed is failed on its first attempt."""
    order_id = "ord_bad_1"
    await register_order(engine, order_id)
    item = build_event("payment_intent.succeeded", EventOptions(order_id=order_id), now_ms=now_ms())
    item["data"]["object"]["currency"] = "EURO"
    assert b'"EURO"' in encode_event(item)
    answer = await post_event(client, item, secret_of(settings))
    assert answer["duplicate"] is False

    metrics = WorkerMetrics()
    await run_burst_worker(settings, queue_name, metrics=metrics)

    parked = await get_event(engine, str(item["id"]))
    assert parked is not None
    assert parked.status == "failed"
    assert parked.attempts == 1
    assert parked.last_error is not None
    assert "invalid_object" in parked.last_error
    assert outcome_count(metrics, "failed") == 1
    assert outcome_count(metrics, "retry") == 0
    state = await order_state(engine, order_id)
    assert state.status == "pending"
    assert await order_version(engine, order_id) == 0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)  # about Redis only
async def test_stopped_worker_process_closes_its_redis_connections(
    engine: AsyncEngine, settings: Settings, private_redis: LocalRedis, queue_name: str
) -> None:
    """A stopped (non-burst) worker process leaves no Redis connection of its own open."""
    private = replace(settings, redis_url=SecretUrl(private_redis.url))
    order_id = "ord_sweep_1"
    events = sofort_payment(new_clock(), order_id)[-1:]
    await register_order(engine, order_id)
    # Recorded a minute ago and never enqueued: the sweeper's to find, through its own client.
    body = encode_event(events[0])
    await record_event(
        engine, NewEvent(parse_envelope(body), body, EventStatus.PENDING), now_ms=now_ms() - 60_000
    )
    created: list[ArqRedis] = []

    def redis_factory() -> ArqRedis:
        # What WorkerProcess does by default, keeping a handle to clean up after a leak.
        client = create_redis(private.redis_url.reveal(), queue_name=queue_name)
        created.append(client)
        return client

    observer = create_redis(private_redis.url, queue_name=queue_name)
    try:
        baseline = len(await observer.client_list())  # the observer itself
        process = WorkerProcess(
            private, queue_name=queue_name, metrics=WorkerMetrics(), redis_factory=redis_factory
        )
        task = asyncio.create_task(process.run())
        try:

            async def swept_and_applied() -> bool:
                return (await statuses(engine)) == {str(events[0]["id"]): "processed"}

            await eventually(swept_and_applied)
        finally:
            process.stop()
            await asyncio.wait_for(task, timeout=30)
        assert len(created) >= 2  # the arq worker's client and the sweeper's

        async def all_closed() -> bool:
            return len(await observer.client_list()) == baseline

        await eventually(all_closed, timeout_s=5)
    finally:
        for client in [*created, observer]:
            await close_redis(client)
