"""SQLite reads beside a writer: while another connection holds the database's write lock, the
read paths (the readiness probe, the metrics scrape, the sweeper's page of pending events, the
CLI's listings) still answer, and every write still takes the write lock before it starts.

The busy timeout is cut to LOCK_WAIT_MS here, and the lock is held for the whole read: a read
that queued for the write lock would fail with "database is locked", so one that answers did not
wait for the lock at all.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
from arq.connections import ArqRedis
from click.testing import CliRunner, Result
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli.main import main
from service.ingress.app import create_app
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.store import engine as engine_module
from service.store.engine import create_engine, reading
from service.store.inbox import inbox_summary, pending_event_ids, reopen_for_replay
from service.store.migrate import upgrade
from service.store.outages import is_store_outage
from tests.support import flows
from tests.support.logging_state import logging_restored
from tests.support.processes import SETTINGS_VARIABLES
from tests.support.sqlite_locks import write_locked
from tests.support.webhooks import (
    SECRET,
    Client,
    get_json,
    metric_value,
    open_client,
    scrape,
)

# How long SQLite waits for the write lock in these tests (the service waits 30 s).
LOCK_WAIT_MS = 200
ORDER_ID = "ord_reads_1"


@pytest.fixture
def short_lock_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", LOCK_WAIT_MS)


@pytest_asyncio.fixture
async def store(sqlite_url: str, short_lock_wait: None) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite order store holding one registered order and one pending event."""
    engine = create_engine(sqlite_url)
    await upgrade(engine)
    await flows.register_order(engine, ORDER_ID)
    await flows.record(
        engine, [flows.event(flows.new_clock(), "payment_intent.succeeded", ORDER_ID)]
    )
    yield engine
    await engine.dispose()


def _settings(sqlite_url: str, redis_url: str) -> Settings:
    return Settings(
        webhook_secrets=(Secret(SECRET),),
        redis_url=SecretUrl(redis_url),
        database_url=SecretUrl(sqlite_url),
    )


@pytest_asyncio.fixture
async def client(
    store: AsyncEngine, sqlite_url: str, redis_url: str, redis: ArqRedis
) -> AsyncIterator[Client]:
    """The ingress on the SQLite store."""
    started = await open_client(
        create_app(_settings(sqlite_url, redis_url), engine=store, redis=redis)
    )
    yield started
    await started.close()


async def test_readyz_answers_200_while_the_write_lock_is_held(
    client: Client, sqlite_url: str
) -> None:
    """/readyz reports the database ok while another connection holds SQLite's write lock."""
    with write_locked(sqlite_url):
        status, body = await get_json(client, "/readyz")

    assert (status, body["database"]) == (200, "ok")


async def test_a_metrics_scrape_counts_events_while_the_write_lock_is_held(
    client: Client, sqlite_url: str
) -> None:
    """A /metrics scrape under another connection's write lock reads the inbox counts."""
    with write_locked(sqlite_url):
        samples = await scrape(client)

    assert metric_value(samples, "wooshpay_events", status="pending") == 1


async def test_inbox_summary_reads_while_the_write_lock_is_held(
    store: AsyncEngine, sqlite_url: str
) -> None:
    """inbox_summary returns the counts and the oldest pending event under another write lock."""
    with write_locked(sqlite_url):
        counts, oldest_ms = await inbox_summary(store)

    assert counts == {"pending": 1}
    assert oldest_ms is not None


async def test_the_sweeper_pages_pending_events_while_the_write_lock_is_held(
    store: AsyncEngine, sqlite_url: str
) -> None:
    """The sweeper's read of pending event ids answers under another connection's write lock."""
    with write_locked(sqlite_url):
        page = await pending_event_ids(store, received_before_ms=flows.now_ms() + 1, limit=10)

    assert len(page) == 1


async def test_writes_still_take_the_write_lock_before_they_start(
    store: AsyncEngine, sqlite_url: str
) -> None:
    """Under another connection's write lock every write path, and any transaction not marked
    as reading, waits out the busy timeout and fails as an outage; marked reads do not."""
    event_id = (await pending_event_ids(store, received_before_ms=flows.now_ms() + 1, limit=1))[0][
        1
    ]
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "engine.begin()": lambda: flows.register_order(store, "ord_reads_2"),
        "engine.begin() update": lambda: reopen_for_replay(
            store, [event_id], now_ms=flows.now_ms()
        ),
        "an unmarked connection": lambda: _select_one(store),
        "the driver's autocommit insert": lambda: flows.record(
            store, [flows.event(flows.new_clock(), "payment_intent.created", "ord_reads_3")]
        ),
    }
    failures: dict[str, BaseException] = {}
    with write_locked(sqlite_url):
        for name, write in writes.items():
            # The driver's own error on its path, SQLAlchemy's elsewhere: both are outages.
            with pytest.raises((OperationalError, sqlite3.OperationalError)) as raised:
                await write()
            failures[name] = raised.value
        await _select_one(reading(store))

    for name, error in failures.items():
        assert "database is locked" in str(error), name
        assert is_store_outage(error), name
    await flows.register_order(store, "ord_reads_2")  # the lock released, writes go through


async def _select_one(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


# --- the command line ---------------------------------------------------------------------------


async def _prepare_cli_store(database_url: str) -> str:
    """A migrated store with one order and one pending event; the event's id."""
    engine = create_engine(database_url)
    try:
        await upgrade(engine)
        await flows.register_order(engine, ORDER_ID)
        item = flows.event(flows.new_clock(), "payment_intent.succeeded", ORDER_ID)
        await flows.record(engine, [item])
    finally:
        await engine.dispose()
    return str(item["id"])


def _cli(database_url: str, redis_url: str, *args: str) -> Result:
    env: dict[str, str | None] = dict.fromkeys(SETTINGS_VARIABLES)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, LOG_FORMAT="json")
    return CliRunner().invoke(main, list(args), env=env)


def test_cli_reads_while_the_write_lock_is_held_and_cli_writes_wait(
    sqlite_url: str, redis_url: str, short_lock_wait: None
) -> None:
    """`events list|show`, `orders list|show` and `events replay --dry-run` answer under another
    connection's write lock; `orders add` still waits for it and reports the store busy."""
    event_id = asyncio.run(_prepare_cli_store(sqlite_url))
    reads = {
        "events list": ("events", "list", "--json"),
        "events show": ("events", "show", event_id, "--json"),
        "orders list": ("orders", "list", "--json"),
        "orders show": ("orders", "show", ORDER_ID, "--json"),
        "events replay --dry-run": ("events", "replay", event_id, "--dry-run"),
    }
    with logging_restored(), write_locked(sqlite_url):
        answers = {name: _cli(sqlite_url, redis_url, *args) for name, args in reads.items()}
        started = time.monotonic()
        write = _cli(
            sqlite_url,
            redis_url,
            "orders",
            "add",
            "ord_cli_2",
            "--amount",
            "100",
            "--currency",
            "EUR",
        )
        write_s = time.monotonic() - started

    for name, answer in answers.items():
        assert answer.exit_code == 0, f"{name}: {answer.stdout}{answer.stderr}"
    assert [event["event_id"] for event in json.loads(answers["events list"].stdout)] == [event_id]
    assert json.loads(answers["events show"].stdout)["status"] == "pending"
    assert [order["order_id"] for order in json.loads(answers["orders list"].stdout)] == [ORDER_ID]
    assert json.loads(answers["orders show"].stdout)["order_id"] == ORDER_ID
    assert "1 event would be replayed" in answers["events replay --dry-run"].stdout
    assert write.exit_code == 1
    assert "is busy (database is locked)" in write.stderr
    assert write_s >= LOCK_WAIT_MS / 1000  # it waited out the busy timeout for the lock
