"""Reconciliation through faults: a SIGKILLed worker, a flushed Redis, a stopped database.

The shared Redis and PostgreSQL servers are never stopped, flushed or reconfigured: Redis faults
use a private redis-server, and "the database is down" is a TCP proxy in front of PostgreSQL
whose path is cut (tests.support.tcp_proxy).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio
import structlog
from aiohttp.test_utils import TestClient, TestServer
from arq import Retry
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, start_local_redis
from service.ingress.app import create_app
from service.queue import DEFAULT_QUEUE_NAME, create_redis, job_id_for
from service.secrets import SecretUrl
from service.settings import Settings
from service.store import engine as engine_module
from service.store.engine import create_engine
from service.store.inbox import get_event, list_events
from service.store.schema import orders
from tests.support.flows import (
    AMOUNT,
    PATIENT_ATTEMPTS,
    applied_counts,
    close_redis,
    enqueue,
    event_ids,
    expected_state,
    log_entries,
    new_clock,
    order_state,
    outcome_count,
    post_events,
    record,
    register_order,
    run_burst_worker,
    sofort_flow,
    sofort_payment,
    start_cli_worker,
    statuses,
    stop_process,
    worker_env,
)
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import eventually
from workers import sweeper
from workers.main import WorkerProcess
from workers.metrics import WorkerMetrics
from workers.reconcile import DEPS_KEY, WorkerDeps, reconcile_event
from workers.sweeper import sweep_once

WORKER_TIMEOUT_S = 60.0
POSTGRES_ONLY = pytest.mark.parametrize(
    "store_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    """A private redis-server this test may restart (losing everything) or point a CLI at."""
    server = start_local_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest_asyncio.fixture
async def proxy(store_url: str) -> AsyncIterator[TcpProxy]:
    """A TCP proxy in front of the test's PostgreSQL server, listening."""
    url = make_url(store_url)
    tcp_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await tcp_proxy.start()
    try:
        yield tcp_proxy
    finally:
        await tcp_proxy.close()


@contextlib.asynccontextmanager
async def order_locked(engine: AsyncEngine, order_id: str) -> AsyncIterator[None]:
    """Hold what a reconcile job must lock for `order_id` until the block ends.

    PostgreSQL: the order row (SELECT ... FOR UPDATE), so a job blocks inside its transaction
    after locking its event row. SQLite: the database write lock (BEGIN IMMEDIATE), so a job
    blocks as it begins. On SQLite, do not read through `engine` meanwhile: that waits too.
    """
    async with engine.connect() as connection:
        await connection.begin()
        if engine.dialect.name == "postgresql":
            await connection.execute(
                select(orders.c.order_id).where(orders.c.order_id == order_id).with_for_update()
            )
        try:
            yield
        finally:
            await connection.rollback()


async def lock_waiters(engine: AsyncEngine) -> int:
    """PostgreSQL backends of this database waiting for a lock."""
    async with engine.connect() as connection:
        count = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(count or 0)


async def in_progress_keys(redis: ArqRedis, ids: list[str]) -> list[str]:
    keys = [f"{in_progress_key_prefix}{job_id_for(event_id)}" for event_id in ids]
    return [key for key in keys if await redis.exists(key)]


async def test_worker_sigkilled_mid_job(
    engine: AsyncEngine,
    store_url: str,
    private_redis: LocalRedis,
    tmp_path: Path,
) -> None:
    """Jobs of a worker SIGKILLed mid-transaction are rerun by another worker, each once."""
    # arq reruns a killed job only once its in-progress key expires (job timeout 30 s + 10 s);
    # the test deletes those keys instead, which is all their expiry does.
    order_id = "ord_kill_1"
    events = sofort_payment(new_clock(), order_id)
    ids = event_ids(events)
    order_terms = await register_order(engine, order_id)
    await record(engine, events)
    env = worker_env(store_url, private_redis.url)
    logs = [tmp_path / "killed.log", tmp_path / "rerun.log"]
    pool = create_redis(private_redis.url, queue_name=DEFAULT_QUEUE_NAME)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        assert await enqueue(pool, ids) == len(ids)
        async with order_locked(engine, order_id):
            # python -m service, not `uv run`: SIGKILL must hit the worker, not a uv parent.
            processes.append(start_cli_worker(env, logs[0], via_uv=False))

            async def all_in_progress() -> bool:
                return len(await in_progress_keys(pool, ids)) == len(ids)

            await eventually(all_in_progress, timeout_s=WORKER_TIMEOUT_S)
            if engine.dialect.name == "postgresql":
                # Inside their transactions: each job holds its event row, waits for the order.
                async def all_blocked() -> bool:
                    return await lock_waiters(engine) == len(ids)

                await eventually(all_blocked, timeout_s=WORKER_TIMEOUT_S)
            killed = processes[0]
            killed.send_signal(signal.SIGKILL)
            assert await asyncio.to_thread(killed.wait, WORKER_TIMEOUT_S) == -signal.SIGKILL

        assert set((await statuses(engine)).values()) == {"pending"}
        stuck = await in_progress_keys(pool, ids)
        assert len(stuck) == len(ids)
        ttls = [await pool.pttl(key) for key in stuck]
        assert min(ttls) > 20_000, ttls  # they would hold the rerun back for ~40 s
        assert await pool.zcard(DEFAULT_QUEUE_NAME) == len(ids)  # the jobs were not lost
        assert await pool.delete(*stuck) == len(ids)

        processes.append(start_cli_worker(env, logs[1], via_uv=False))
        rerun = processes[1]
        assert await asyncio.to_thread(rerun.wait, WORKER_TIMEOUT_S) == 0, logs[1].read_text()
        assert await pool.zcard(DEFAULT_QUEUE_NAME) == 0
    finally:
        for process in processes:
            await asyncio.to_thread(stop_process, process)
        await close_redis(pool)

    records = await list_events(engine)
    assert {r.event_id for r in records} == set(ids)
    assert all(r.status == "processed" and r.attempts == 1 for r in records), records
    assert await order_state(engine, order_id) == expected_state(order_terms, events)
    assert (await order_state(engine, order_id)).status == "paid"
    assert applied_counts([logs[0]]) == {}
    assert applied_counts([logs[1]]) == dict.fromkeys(ids, 1)
    # The rerun is the killed job itself, on its second try (arq counts the killed pickup).
    reruns = [e for e in log_entries([logs[1]]) if e.get("event") == "reconcile.applied"]
    assert reruns
    assert {e["attempt"] for e in reruns} == {2}


async def test_redis_flush_after_accept_is_swept(
    engine: AsyncEngine, settings: Settings, queue_name: str, private_redis: LocalRedis
) -> None:
    """Events accepted before Redis lost everything are re-enqueued by the sweeper and applied."""
    private = replace(
        settings, redis_url=SecretUrl(private_redis.url), retry_max_attempts=PATIENT_ATTEMPTS
    )
    order_id = "ord_flush_1"
    flow = sofort_flow(order_id)
    order_terms = await register_order(engine, order_id)
    before = create_redis(private_redis.url, queue_name=queue_name)
    try:
        app = create_app(private, engine=engine, redis=before)
        async with TestClient(TestServer(app)) as client:
            answers = await post_events(
                client, flow.all_events, private.webhook_secrets[0].reveal()
            )
        assert all(answer["duplicate"] is False for answer in answers)
        assert await before.zcard(queue_name) == len(flow.all_events)
    finally:
        await close_redis(before)

    await asyncio.to_thread(private_redis.restart)

    after = create_redis(private_redis.url, queue_name=queue_name)
    try:
        assert await after.zcard(queue_name) == 0  # the jobs are gone
        assert set((await statuses(engine)).values()) == {"pending"}
        swept = await sweep(engine, after)
        assert swept == len(flow.all_events)
        assert await sweep(engine, after) == 0  # jobs in flight are not enqueued twice
        await run_burst_worker(private, queue_name)
    finally:
        await close_redis(after)

    records = await list_events(engine)
    assert all(r.status == "processed" and r.order_id == order_id for r in records), records
    state = await order_state(engine, order_id)
    assert state == expected_state(order_terms, flow.all_events)
    assert (state.status, state.amount_refunded) == ("refunded", AMOUNT)


async def sweep(engine: AsyncEngine, redis: ArqRedis) -> int:
    """One sweep that considers every pending event, however young."""
    return await sweep_once(engine, redis, min_age_s=0)


@POSTGRES_ONLY
async def test_store_down_job_retries_then_applies(
    engine: AsyncEngine, settings: Settings, proxy: TcpProxy
) -> None:
    """With the database unreachable the job raises arq Retry; once it is back, it applies."""
    proxied = replace(
        settings, database_url=SecretUrl(proxy.url_for(settings.database_url.reveal()))
    )
    order_id = "ord_down_1"
    events = sofort_payment(new_clock(), order_id)[-1:]  # the succeeded event
    (event_id,) = event_ids(events)
    order_terms = await register_order(engine, order_id)
    await record(engine, events)
    deps = WorkerDeps(proxied, create_engine(proxied.database_url.reveal()), WorkerMetrics())
    try:
        async with deps.engine.connect() as connection:  # a pooled connection, soon dead
            assert await connection.scalar(text("SELECT 1")) == 1
        await proxy.cut()
        for attempt in (1, 2):
            with pytest.raises(Retry) as retry:
                await reconcile_event({DEPS_KEY: deps, "job_try": attempt}, event_id)
            assert retry.value.defer_score is not None
            assert retry.value.defer_score > 0
        assert outcome_count(deps.metrics, "retry") == 2
        pending = await get_event(engine, event_id)
        assert pending is not None
        assert (pending.status, pending.attempts) == ("pending", 0)  # nothing written
        assert (await order_state(engine, order_id)).status == "pending"

        await proxy.restore()
        outcome = await reconcile_event({DEPS_KEY: deps, "job_try": 3}, event_id)
        assert outcome == "applied"
    finally:
        await deps.engine.dispose()

    applied = await get_event(engine, event_id)
    assert applied is not None
    assert (applied.status, applied.attempts, applied.order_id) == ("processed", 1, order_id)
    assert await order_state(engine, order_id) == expected_state(order_terms, events)


@POSTGRES_ONLY
async def test_store_cut_mid_transaction_worker_recovers(
    engine: AsyncEngine,
    settings: Settings,
    redis: ArqRedis,
    queue_name: str,
    proxy: TcpProxy,
) -> None:
    """A running worker whose database vanishes mid-job keeps retrying and applies once back."""
    proxied = replace(
        settings, database_url=SecretUrl(proxy.url_for(settings.database_url.reveal()))
    )
    order_id = "ord_down_2"
    events = sofort_payment(new_clock(), order_id)[-1:]
    (event_id,) = event_ids(events)
    order_terms = await register_order(engine, order_id)
    await record(engine, events)
    metrics = WorkerMetrics()
    pools: list[ArqRedis] = []

    def redis_factory() -> ArqRedis:
        pool = create_redis(settings.redis_url.reveal(), queue_name=queue_name)
        pools.append(pool)
        return pool

    process = WorkerProcess(
        proxied, queue_name=queue_name, metrics=metrics, redis_factory=redis_factory
    )
    task = asyncio.create_task(process.run())
    try:
        async with order_locked(engine, order_id):
            await enqueue(redis, [event_id])

            async def job_blocked() -> bool:
                return await lock_waiters(engine) == 1

            await eventually(job_blocked)
            await proxy.cut()  # the job's connection dies inside its transaction

            async def retried() -> bool:
                return outcome_count(metrics, "retry") >= 2

            await eventually(retried)
        pending = await get_event(engine, event_id)
        assert pending is not None
        assert pending.status == "pending"
        assert (await order_state(engine, order_id)).status == "pending"

        await proxy.restore()

        async def processed() -> bool:
            record = await get_event(engine, event_id)
            return record is not None and record.status == "processed"

        await eventually(processed, timeout_s=30)
    finally:
        process.stop()
        await asyncio.wait_for(task, timeout=30)
        for pool in pools:
            await close_redis(pool)

    applied = await get_event(engine, event_id)
    assert applied is not None
    assert (applied.attempts, applied.order_id) == (1, order_id)
    assert outcome_count(metrics, "applied") == 1
    assert outcome_count(metrics, "failed") == 0
    assert await order_state(engine, order_id) == expected_state(order_terms, events)


@POSTGRES_ONLY
async def test_store_connection_killed_mid_job_is_retried(
    engine: AsyncEngine, settings: Settings
) -> None:
    """A job whose database connection is killed mid-transaction counts a retry, not a failure."""
    order_id = "ord_down_3"
    events = sofort_payment(new_clock(), order_id)[-1:]
    (event_id,) = event_ids(events)
    order_terms = await register_order(engine, order_id)
    await record(engine, events)
    deps = WorkerDeps(settings, create_engine(settings.database_url.reveal()), WorkerMetrics())
    try:
        async with order_locked(engine, order_id):
            job = asyncio.create_task(reconcile_event({DEPS_KEY: deps, "job_try": 1}, event_id))

            async def job_blocked() -> bool:
                return await lock_waiters(engine) == 1

            await eventually(job_blocked)
            # As a database restart or failover does: the server ends the job's session.
            async with engine.connect() as connection:
                killed = await connection.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
            assert killed == 1
            with pytest.raises(Retry):
                await asyncio.wait_for(job, timeout=30)
        retried = await get_event(engine, event_id)
        assert retried is not None
        assert (retried.status, retried.attempts) == ("pending", 1)
        assert retried.last_error is not None
        assert (await order_state(engine, order_id)).status == "pending"

        outcome = await reconcile_event({DEPS_KEY: deps, "job_try": 2}, event_id)
        assert outcome == "applied"
    finally:
        await deps.engine.dispose()

    applied = await get_event(engine, event_id)
    assert applied is not None
    assert (applied.status, applied.attempts) == ("processed", 2)
    assert await order_state(engine, order_id) == expected_state(order_terms, events)


@POSTGRES_ONLY
async def test_statement_stuck_behind_a_lock_is_cancelled_by_the_server(
    engine: AsyncEngine, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connections carry a server-side statement_timeout: a job whose statement waits on a lock
    longer than that is cancelled by PostgreSQL and retried, leaving the event pending; once the
    lock is gone the job applies."""
    monkeypatch.setattr(engine_module, "STATEMENT_TIMEOUT_MS", 300)
    order_id = "ord_stuck_1"
    events = sofort_payment(new_clock(), order_id)[-1:]
    (event_id,) = event_ids(events)
    await register_order(engine, order_id)
    await record(engine, events)
    deps = WorkerDeps(settings, create_engine(settings.database_url.reveal()), WorkerMetrics())
    try:
        async with order_locked(engine, order_id):
            started = time.monotonic()
            with pytest.raises(Retry):
                await reconcile_event({DEPS_KEY: deps, "job_try": 1}, event_id)
            # Well before the 30 s job timeout: the server cancelled the statement.
            assert time.monotonic() - started < 10
        pending = await get_event(engine, event_id)
        assert pending is not None
        assert pending.status == "pending"
        assert pending.last_error is not None
        assert "statement timeout" in pending.last_error
        assert await reconcile_event({DEPS_KEY: deps, "job_try": 2}, event_id) == "applied"
    finally:
        await deps.engine.dispose()


async def test_a_sweep_round_that_hangs_is_abandoned_and_the_next_runs(
    redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that accepts connections and never answers cannot stall the sweeper: each
    round is abandoned after ROUND_TIMEOUT_S (logged as skipped) and the next one starts."""
    monkeypatch.setattr(sweeper, "ROUND_TIMEOUT_S", 0.2)
    accepted: list[asyncio.StreamWriter] = []
    silent = await asyncio.start_server(
        lambda _reader, writer: accepted.append(writer), "127.0.0.1", 0
    )
    port = silent.sockets[0].getsockname()[1]
    stuck = create_engine(f"postgresql://postgres@127.0.0.1:{port}/never")
    with structlog.testing.capture_logs() as entries:
        task = asyncio.create_task(
            sweeper.run_sweeper(stuck, redis, interval_s=0.05, metrics=WorkerMetrics())
        )
        try:

            async def skipped_twice() -> bool:
                skips = [e for e in entries if e["event"] == "sweep.skipped"]
                return len(skips) >= 2

            await eventually(skipped_twice, timeout_s=4)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await stuck.dispose()
            for writer in accepted:
                writer.close()
            silent.close()
            await silent.wait_closed()
    skips = [entry for entry in entries if entry["event"] == "sweep.skipped"]
    assert {entry["error"] for entry in skips} == {"TimeoutError"}
