"""Store outages on real servers: each is classified as an outage, a job meeting one retries
quietly (one `reconcile.retry` warning, no traceback) and applies once the store is back, and the
ingress answers 503.

PostgreSQL outages come from a private cluster this module starts, stops, shuts down and puts in
standby (tests.support.private_postgres); the shared server is never touched. SQLite's comes
from a second connection holding the database's write lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
import structlog
from arq import Retry
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ingress.app import create_app
from service.secrets import SecretUrl
from service.settings import Settings
from service.store import engine as engine_module
from service.store.driver import driver_transaction
from service.store.engine import create_engine
from service.store.inbox import get_event
from service.store.outages import STORE_OUTAGE_ERRORS, is_store_outage
from tests.support import databases
from tests.support.flows import (
    event_ids,
    new_clock,
    order_state,
    record,
    register_order,
    sofort_payment,
)
from tests.support.private_postgres import (
    PostgresUnavailable,
    PrivatePostgres,
    create_private_postgres,
)
from tests.support.sqlite_locks import sqlite_path, write_locked
from tests.support.waiting import eventually
from tests.support.webhooks import delivery, get_json, open_client, send
from workers.metrics import WorkerMetrics
from workers.reconcile import DEPS_KEY, WorkerDeps, reconcile_event
from workers.sweeper import run_sweeper

LogEntries = Sequence[Mapping[str, Any]]

# A short busy timeout, so a locked SQLite database fails fast instead of after 30 s.
SQLITE_BUSY_TIMEOUT_MS = 50


@dataclass(frozen=True)
class PrivateStore:
    """The private cluster and the URL of its migrated order store."""

    cluster: PrivatePostgres
    url: str  # also what asyncpg.connect takes


@pytest.fixture(scope="module")
def private_store() -> Iterator[PrivateStore]:
    """One private cluster for the module (initdb takes a few seconds), with a migrated store."""
    try:
        cluster = create_private_postgres()
    except PostgresUnavailable as error:
        if databases.ci_requires_postgres():
            pytest.fail(f"CI=true requires the PostgreSQL tests: {error}")
        pytest.skip(f"no private PostgreSQL cluster: {error}")
    try:
        url = asyncio.run(databases.create_database(cluster.url()))
        asyncio.run(databases.migrate(url))
        yield PrivateStore(cluster, url)
    finally:
        cluster.destroy()


@pytest.fixture
def store(private_store: PrivateStore) -> PrivateStore:
    """The private store, running as a primary whatever the previous test left behind."""
    private_store.cluster.ensure_primary()
    return private_store


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """`settings` and `engine` are SQLite here; the PostgreSQL cases point their settings at the
    private cluster instead of the shared server."""
    return sqlite_url


@pytest_asyncio.fixture
async def store_engine(store: PrivateStore) -> AsyncIterator[AsyncEngine]:
    """An engine on the private store, emptied."""
    engine = create_engine(store.url)
    await databases.truncate_all(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def store_settings(settings: Settings, store: PrivateStore) -> Settings:
    return replace(settings, database_url=SecretUrl(store.url))


@contextlib.asynccontextmanager
async def worker_deps(settings: Settings) -> AsyncIterator[WorkerDeps]:
    """What a worker process opens for its jobs, closed on the way out."""
    deps = WorkerDeps(settings, create_engine(settings.database_url.reveal()), WorkerMetrics())
    try:
        yield deps
    finally:
        await deps.engine.dispose()


async def recorded_payment(engine: AsyncEngine, order_id: str) -> str:
    """Register an order and record its `payment_intent.succeeded`; return the event id."""
    events = sofort_payment(new_clock(), order_id)[-1:]
    await register_order(engine, order_id)
    await record(engine, events)
    (event_id,) = event_ids(events)
    return event_id


async def run_job(deps: WorkerDeps, event_id: str, attempt: int) -> str:
    return await reconcile_event({DEPS_KEY: deps, "job_try": attempt}, event_id)


def assert_quiet_retry(entries: LogEntries) -> str:
    """One `reconcile.retry` warning with a reason, no `reconcile.error`, no traceback; returns
    the reason."""
    retries = [entry for entry in entries if entry["event"] == "reconcile.retry"]
    assert len(retries) == 1, entries
    assert retries[0]["log_level"] == "warning"
    assert not [entry for entry in entries if entry["event"] == "reconcile.error"], entries
    tracebacks = [entry for entry in entries if "exc_info" in entry or "exception" in entry]
    assert not tracebacks, tracebacks
    reason = retries[0]["reason"]
    assert isinstance(reason, str)
    assert reason
    return reason


async def assert_applied_once_back(
    deps: WorkerDeps, engine: AsyncEngine, event_id: str, order_id: str, attempt: int
) -> None:
    """The event was left pending by the outage, and the next try applies it."""
    await engine.dispose()  # its pooled connections did not survive the outage
    pending = await get_event(engine, event_id)
    assert pending is not None
    assert pending.status == "pending"
    assert await run_job(deps, event_id, attempt) == "applied"
    applied = await get_event(engine, event_id)
    assert applied is not None
    assert applied.status == "processed"
    assert (await order_state(engine, order_id)).status == "paid"


async def refused(dsn: str) -> Exception:
    """The error of a connection attempt the server must refuse."""
    try:
        connection = await asyncpg.connect(dsn, timeout=5)
    except Exception as error:
        return error
    await connection.close()
    raise AssertionError("the server accepted a connection")


def sqlstates(error: BaseException) -> set[str]:
    """The SQLSTATE codes along an error's explicit cause chain."""
    found = set()
    link: BaseException | None = error
    while link is not None:
        sqlstate = getattr(link, "sqlstate", None)
        if isinstance(sqlstate, str):
            found.add(sqlstate)
        link = link.__cause__
    return found


async def lock_waiters(dsn: str) -> int:
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        count = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    finally:
        await connection.close()
    return int(count)


@contextlib.asynccontextmanager
async def order_row_locked(dsn: str, order_id: str) -> AsyncIterator[None]:
    """Hold the order row's lock (SELECT ... FOR UPDATE) until the block ends; the server may
    end this session meanwhile."""
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute("SELECT 1 FROM orders WHERE order_id = $1 FOR UPDATE", order_id)
        yield
    finally:
        connection.terminate()


# --- the server starting up: 57P03 "not yet accepting connections" ------------------------------


@pytest.mark.postgres
async def test_a_standby_refusal_is_an_outage_on_every_path(store: PrivateStore) -> None:
    """A server that is not accepting connections yet (57P03) is an outage, raw from asyncpg,
    through SQLAlchemy and through the engine's driver-level transactions."""
    store.cluster.enter_standby()
    error = await refused(store.url)
    assert isinstance(error, asyncpg.exceptions.CannotConnectNowError)
    assert error.sqlstate == "57P03"
    assert "not accepting connections" in str(error)
    assert is_store_outage(error)

    engine = create_engine(store.url)
    try:
        with pytest.raises(STORE_OUTAGE_ERRORS) as through_sqlalchemy:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        with pytest.raises(STORE_OUTAGE_ERRORS) as through_driver:
            async with driver_transaction(engine):
                pass
    finally:
        await engine.dispose()
    for wrapped in (through_sqlalchemy.value, through_driver.value):
        assert "57P03" in sqlstates(wrapped)
        assert is_store_outage(wrapped)


@pytest.mark.postgres
async def test_job_retries_quietly_while_the_store_starts_up_then_applies(
    store: PrivateStore, store_engine: AsyncEngine, store_settings: Settings
) -> None:
    """A job meeting a server not yet accepting connections raises arq Retry with one quiet
    `reconcile.retry` line (no `reconcile.error`, no traceback), and applies once it is up."""
    order_id = "ord_standby_1"
    event_id = await recorded_payment(store_engine, order_id)
    async with worker_deps(store_settings) as deps:
        store.cluster.enter_standby()
        with structlog.testing.capture_logs() as entries, pytest.raises(Retry):
            await run_job(deps, event_id, 1)
        assert "not accepting connections" in assert_quiet_retry(entries)

        store.cluster.leave_standby()
        await assert_applied_once_back(deps, store_engine, event_id, order_id, 2)


@pytest.mark.postgres
async def test_ingress_answers_503_while_the_store_starts_up(
    store: PrivateStore, store_settings: Settings, redis: ArqRedis, queue_name: str
) -> None:
    """While the store is not accepting connections the ingress answers 503 (never 500),
    enqueues nothing, reports not ready, still serves metrics, and logs no traceback."""
    store.cluster.enter_standby()
    engine = create_engine(store.url)
    client = await open_client(create_app(store_settings, engine=engine, redis=redis))
    try:
        with structlog.testing.capture_logs() as entries:
            status, answer = await send(client, delivery())
            ready_status, ready = await get_json(client, "/readyz")
            async with client.get("/metrics") as metrics:
                metrics_status = metrics.status
    finally:
        await client.close()
        await engine.dispose()

    assert (status, answer) == (503, {"error": "order store unavailable"})
    assert await redis.zcard(queue_name) == 0
    assert (ready_status, ready["database"]) == (503, "unavailable")
    assert metrics_status == 200
    failed = [entry for entry in entries if entry["event"] == "inbox.batch_failed"]
    assert [entry["log_level"] for entry in failed] == ["warning"]
    assert not [entry for entry in entries if "exc_info" in entry or "exception" in entry]


# --- the server shutting down -------------------------------------------------------------------


@pytest.mark.postgres
async def test_job_retries_quietly_while_the_store_shuts_down_then_applies(
    store: PrivateStore, store_engine: AsyncEngine, store_settings: Settings
) -> None:
    """During a smart shutdown (waiting for a session to end) new sessions get 57P03 "the
    database system is shutting down": an outage, retried quietly; applied after a restart."""
    order_id = "ord_shutdown_1"
    event_id = await recorded_payment(store_engine, order_id)
    await store_engine.dispose()  # only `held` may keep the server from finishing its shutdown
    held = await asyncpg.connect(store.url, timeout=5)
    try:
        store.cluster.request_stop("smart")
        refusals: list[BaseException] = []

        async def refusing() -> bool:
            try:
                connection = await asyncpg.connect(store.url, timeout=5)
            except asyncpg.exceptions.CannotConnectNowError as error:
                refusals.append(error)
                return True
            await connection.close()
            return False

        await eventually(refusing)
        assert "the database system is shutting down" in str(refusals[-1])
        assert is_store_outage(refusals[-1])

        async with worker_deps(store_settings) as deps:
            with structlog.testing.capture_logs() as entries, pytest.raises(Retry):
                await run_job(deps, event_id, 1)
            assert "shutting down" in assert_quiet_retry(entries)
            await held.close()
            await asyncio.to_thread(store.cluster.wait_stopped)
            await asyncio.to_thread(store.cluster.start)
            await assert_applied_once_back(deps, store_engine, event_id, order_id, 2)
    finally:
        await held.close()


# --- the server ending sessions: 57P01 "terminating connection due to administrator command" ----


@pytest.mark.postgres
async def test_a_terminated_session_is_an_outage(
    store: PrivateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pg_terminate_backend ends a session mid-query with 57P01, and a pooled connection it
    ended while idle fails its next use with an outage; the pool then opens a fresh one."""
    # However slow this machine, the pooled connection's death must be met by its next
    # statement, not found first by the pool's ping of connections idle for a while.
    monkeypatch.setattr(engine_module, "PING_IDLE_AFTER_S", 3600.0)
    admin = await asyncpg.connect(store.url, timeout=5)
    victim = await asyncpg.connect(store.url, timeout=5)
    engine = create_engine(store.url)
    try:
        query = asyncio.create_task(victim.fetchval("SELECT pg_sleep(60)"))
        victim_pid = victim.get_server_pid()

        async def sleeping() -> bool:
            state = await admin.fetchval(
                "SELECT state FROM pg_stat_activity WHERE pid = $1", victim_pid
            )
            return bool(state == "active")

        await eventually(sleeping)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim_pid)
        with pytest.raises(asyncpg.exceptions.PostgresError) as mid_query:
            await asyncio.wait_for(query, timeout=10)
        assert "57P01" in sqlstates(mid_query.value)
        assert is_store_outage(mid_query.value)

        async with driver_transaction(engine) as transaction:  # pools one connection
            pooled_pid = (await transaction.fetch_sql("SELECT pg_backend_pid()", []))[0][0]
        assert await admin.fetchval("SELECT pg_terminate_backend($1, 5000)", pooled_pid)
        with pytest.raises(STORE_OUTAGE_ERRORS) as pooled:
            async with driver_transaction(engine) as transaction:
                await transaction.fetch_sql("SELECT 1", [])
        assert is_store_outage(pooled.value)
        async with driver_transaction(engine) as transaction:
            assert await transaction.fetch_sql("SELECT 1", []) == [(1,)]
    finally:
        await engine.dispose()
        victim.terminate()
        await admin.close()


@pytest.mark.postgres
async def test_job_cut_by_a_fast_shutdown_retries_quietly_then_applies(
    store: PrivateStore, store_engine: AsyncEngine, store_settings: Settings
) -> None:
    """`pg_ctl stop -m fast` while a job waits inside its transaction ends it with 57P01: the
    job raises arq Retry with one quiet `reconcile.retry`, and applies after a restart."""
    order_id = "ord_fast_stop_1"
    event_id = await recorded_payment(store_engine, order_id)
    async with worker_deps(store_settings) as deps:
        async with order_row_locked(store.url, order_id):
            with structlog.testing.capture_logs() as entries:
                job = asyncio.create_task(run_job(deps, event_id, 1))

                async def job_waits_for_the_order() -> bool:
                    return await lock_waiters(store.url) == 1

                await eventually(job_waits_for_the_order)
                await asyncio.to_thread(store.cluster.stop, "fast")
                with pytest.raises(Retry):
                    await asyncio.wait_for(job, timeout=30)
        assert_quiet_retry(entries)

        await asyncio.to_thread(store.cluster.start)
        await assert_applied_once_back(deps, store_engine, event_id, order_id, 2)


# --- the server gone: connection refused --------------------------------------------------------


@pytest.mark.postgres
async def test_job_retries_quietly_while_the_store_is_stopped_then_applies(
    store: PrivateStore, store_engine: AsyncEngine, store_settings: Settings
) -> None:
    """With the server stopped (its pooled connections dead, new ones refused) a job retries
    quietly; once the server is started again the job applies the event."""
    order_id = "ord_stopped_1"
    event_id = await recorded_payment(store_engine, order_id)
    async with worker_deps(store_settings) as deps:
        async with driver_transaction(deps.engine):  # a pooled connection, soon dead
            pass
        await asyncio.to_thread(store.cluster.stop, "fast")
        error = await refused(store.url)
        assert isinstance(error, ConnectionRefusedError)
        assert is_store_outage(error)
        for attempt in (1, 2):
            with structlog.testing.capture_logs() as entries, pytest.raises(Retry):
                await run_job(deps, event_id, attempt)
            assert_quiet_retry(entries)

        await asyncio.to_thread(store.cluster.start)
        await assert_applied_once_back(deps, store_engine, event_id, order_id, 3)


# --- the server out of connections: 53300 -------------------------------------------------------


@pytest.mark.postgres
async def test_too_many_connections_is_an_outage(store: PrivateStore) -> None:
    """A server refusing a connection over a connection limit (53300) is an outage, raw and
    through the engine."""
    admin = await asyncpg.connect(store.url, timeout=5)
    await admin.execute("DROP ROLE IF EXISTS limited")
    await admin.execute("CREATE ROLE limited LOGIN CONNECTION LIMIT 1")
    limited_url = make_url(store.url).set(username="limited")
    limited_dsn = limited_url.render_as_string(hide_password=False)
    only = await asyncpg.connect(limited_dsn, timeout=5)
    engine = create_engine(limited_url.render_as_string(hide_password=False))
    try:
        error = await refused(limited_dsn)
        assert isinstance(error, asyncpg.exceptions.TooManyConnectionsError)
        assert is_store_outage(error)
        with pytest.raises(STORE_OUTAGE_ERRORS) as through_engine:
            async with driver_transaction(engine):
                pass
        assert "53300" in sqlstates(through_engine.value)
    finally:
        await engine.dispose()
        await only.close()
        await admin.execute("DROP ROLE limited")
        await admin.close()


# --- the sweeper -------------------------------------------------------------------------------


async def sweep_rounds(engine: AsyncEngine, redis: ArqRedis, event: str) -> LogEntries:
    """Run the sweeper until it logged `event` twice (it went on after the first); its logs."""
    with structlog.testing.capture_logs() as entries:
        task = asyncio.create_task(
            run_sweeper(engine, redis, interval_s=0.05, metrics=WorkerMetrics())
        )
        try:

            async def logged_twice() -> bool:
                return len([entry for entry in entries if entry["event"] == event]) >= 2

            await eventually(logged_twice)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return entries


@pytest.mark.postgres
async def test_the_sweeper_skips_rounds_quietly_while_the_store_starts_up(
    store: PrivateStore, redis: ArqRedis
) -> None:
    """While the store is not accepting connections each sweep round is skipped with a warning
    naming the outage, and no traceback."""
    store.cluster.enter_standby()
    engine = create_engine(store.url)
    try:
        entries = await sweep_rounds(engine, redis, "sweep.skipped")
    finally:
        await engine.dispose()
    skipped = [entry for entry in entries if entry["event"] == "sweep.skipped"]
    assert {(entry["log_level"], entry["error"]) for entry in skipped} == {
        ("warning", "OperationalError")
    }
    assert not [entry for entry in entries if "exc_info" in entry or "exception" in entry]


@pytest.mark.postgres
async def test_the_sweeper_reports_a_bug_with_its_traceback_and_keeps_sweeping(
    store: PrivateStore, redis: ArqRedis
) -> None:
    """A store without the schema is not an outage: each round logs `sweep.error` with the
    traceback, and the sweeper goes on to the next round rather than dying."""
    unmigrated = await databases.create_database(store.cluster.url())
    engine = create_engine(unmigrated)
    try:
        entries = await sweep_rounds(engine, redis, "sweep.error")
    finally:
        await engine.dispose()
    errors = [entry for entry in entries if entry["event"] == "sweep.error"]
    assert {entry["error"] for entry in errors} == {"ProgrammingError"}
    assert all(entry["exc_info"] for entry in errors)
    assert not [entry for entry in entries if entry["event"] == "sweep.skipped"]


# --- SQLite: "database is locked" ---------------------------------------------------------------


async def test_a_locked_sqlite_database_is_an_outage(engine: AsyncEngine, sqlite_url: str) -> None:
    """SQLite's "database is locked", past the busy timeout, is an outage."""
    path = sqlite_path(sqlite_url)
    with write_locked(sqlite_url):
        writer = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            with pytest.raises(sqlite3.OperationalError) as locked:
                writer.execute("BEGIN IMMEDIATE")
        finally:
            writer.close()
    assert "database is locked" in str(locked.value)
    assert is_store_outage(locked.value)


async def test_job_retries_quietly_while_sqlite_is_locked_then_applies(
    engine: AsyncEngine, settings: Settings, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that cannot take SQLite's write lock within the busy timeout retries quietly, and
    applies once the lock is released."""
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", SQLITE_BUSY_TIMEOUT_MS)
    order_id = "ord_locked_1"
    event_id = await recorded_payment(engine, order_id)
    async with worker_deps(settings) as deps:
        with write_locked(sqlite_url):
            with structlog.testing.capture_logs() as entries, pytest.raises(Retry):
                await run_job(deps, event_id, 1)
            assert "database is locked" in assert_quiet_retry(entries)
        await assert_applied_once_back(deps, engine, event_id, order_id, 2)
