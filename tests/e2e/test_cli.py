"""End-to-end tests of the ops command line (`wooshpay-webhooks`) against real order stores.

Commands run in-process through click's CliRunner with a scrubbed environment (`serve` and the
worker, where a test needs them, as processes); every order store test runs on SQLite (a file per
test) and PostgreSQL (the run's private database, emptied first).
"""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import text

from service.cli.main import main
from service.devtools.local_redis import LocalRedis, free_port, start_local_redis
from service.devtools.send_command import send
from service.devtools.sender import SUPPORTED_TYPES
from service.domain.event_status import EventStatus
from service.queue import DEFAULT_QUEUE_NAME
from service.store.engine import create_engine
from service.store.inbox import NewEvent, get_event
from service.wooshpay.events import parse_envelope
from tests.support import databases
from tests.support.inbox_records import record_event
from tests.support.logging_state import logging_restored
from tests.support.processes import (
    SETTINGS_VARIABLES,
    cli_env,
    describe,
    run_cli,
    running_cli,
    wait_for_http,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ORDER_KEYS = {
    "order_id",
    "amount",
    "currency",
    "status",
    "amount_received",
    "amount_refunded",
    "payment_intent_id",
    "checkout_session_id",
    "needs_review",
    "review_reason",
    "refunds",
    "updated_at",
}
EVENT_KEYS = {"event_id", "type", "status", "attempts", "last_error", "order_id", "received_at"}
# Every command of the documented command line (README, Commands).
DOCUMENTED_COMMANDS = {
    "serve",
    "worker",
    "dev",
    "migrate",
    "orders add",
    "orders show",
    "orders list",
    "events list",
    "events show",
    "events replay",
    "send",
}
NOW_MS = int(time.time() * 1000)
PASSWORD = "hunter2-do-not-echo"
SEND_SECRET = "whsec_cli_test_endpoint"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each command configures logging for the process: put it back after every test."""
    with logging_restored():
        yield


@dataclass
class Cli:
    """Invokes `wooshpay-webhooks` in-process with only the given settings in the environment."""

    database_url: str
    redis_url: str

    def env(self, **overrides: str | None) -> dict[str, str | None]:
        env: dict[str, str | None] = dict.fromkeys(SETTINGS_VARIABLES)
        env.update(DATABASE_URL=self.database_url, REDIS_URL=self.redis_url, LOG_FORMAT="json")
        env.update(overrides)
        return env

    def __call__(self, *args: str, **env: str | None) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env(**env))

    def ok(self, *args: str, **env: str | None) -> Result:
        result = self(*args, **env)
        assert_exit(result, 0)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)


def assert_exit(result: Result, code: int) -> None:
    """The command exited with `code` on purpose (sys.exit), not through an unexpected crash."""
    details = f"exit {result.exit_code}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"command crashed: {result.exception!r}\n{details}") from (
            result.exception
        )
    assert result.exit_code == code, details


def _unreachable_redis() -> str:
    # Nothing listens here: a command that should not touch Redis would fail loudly.
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def cli(store_url: str) -> Cli:
    """A CLI on an empty, migrated order store (SQLite and PostgreSQL)."""
    if store_url.startswith("postgresql"):
        asyncio.run(_truncate(store_url))
    runner = Cli(store_url, _unreachable_redis())
    runner.ok("migrate")
    return runner


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """A throw-away redis-server: the CLI's fixed queue name never touches the shared Redis."""
    server = start_local_redis()
    yield server
    server.stop()


async def _truncate(url: str) -> None:
    engine = create_engine(url)
    try:
        await databases.truncate_all(engine)
    finally:
        await engine.dispose()


async def _execute(url: str, statement: str, **params: object) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(statement), params)
    finally:
        await engine.dispose()


def _sql(url: str, statement: str, **params: object) -> None:
    asyncio.run(_execute(url, statement, **params))


def _event_body(event_id: str, event_type: str, order_id: str) -> bytes:
    document = {
        "id": event_id,
        "object": "event",
        "api_version": "1.0.1",
        "created": NOW_MS,
        "livemode": False,
        "type": event_type,
        "data": {
            "object": {
                "id": f"pi_{order_id}",
                "object": "payment_intent",
                "amount": 2000,
                "amount_received": None,
                "currency": "EUR",
                "merchant_order_id": order_id,
                "metadata": {"order_id": order_id},
                "status": "succeeded",
            }
        },
    }
    return json.dumps(document).encode()


async def _record(url: str, event_id: str, event_type: str, status: str, received_ms: int) -> None:
    body = _event_body(event_id, event_type, "o1")
    engine = create_engine(url)
    try:
        is_new = await record_event(
            engine, NewEvent(parse_envelope(body), body, EventStatus(status)), now_ms=received_ms
        )
        assert is_new
    finally:
        await engine.dispose()


def record(
    url: str, event_id: str, event_type: str, status: str = "pending", offset: int = 0
) -> None:
    """Record an event in the inbox directly, as the ingress would."""
    asyncio.run(_record(url, event_id, event_type, status, NOW_MS + offset))


async def _event_row(url: str, event_id: str) -> tuple[str, int, str | None]:
    engine = create_engine(url)
    try:
        found = await get_event(engine, event_id)
    finally:
        await engine.dispose()
    assert found is not None
    return found.status, found.attempts, found.last_error


def event_row(url: str, event_id: str) -> tuple[str, int, str | None]:
    """(status, attempts, last_error) of a recorded event, read from the store."""
    return asyncio.run(_event_row(url, event_id))


def park_as_failed(url: str, event_id: str) -> None:
    """Put an event in the state the worker leaves it in when it gives up."""
    _sql(
        url,
        "UPDATE events SET status = 'failed', attempts = 3, last_error = 'order_not_found' "
        "WHERE event_id = :event_id",
        event_id=event_id,
    )


# --- migrate ------------------------------------------------------------------------------------


def test_migrate_twice_succeeds(store_url: str) -> None:
    """`migrate` creates the schema, and running it again is a harmless no-op."""
    runner = Cli(store_url, _unreachable_redis())
    first = runner.ok("migrate")
    second = runner.ok("migrate")
    assert first.stdout.strip() == "order store schema at revision 0002"
    assert second.stdout == first.stdout


# --- orders -------------------------------------------------------------------------------------


def test_orders_add_then_show_json(cli: Cli) -> None:
    """A registered order shows as exactly the documented JSON keys, currency upper-cased."""
    added = cli.ok(
        "orders", "add", "o1", "--amount", "2000", "--currency", "eur", "--payment-intent", "pi_1"
    )
    assert "o1" in added.stdout

    order = cli.json("orders", "show", "o1")

    assert set(order) == ORDER_KEYS
    assert order == {
        **order,
        "order_id": "o1",
        "amount": 2000,
        "currency": "EUR",
        "status": "pending",
        "amount_received": 0,
        "amount_refunded": 0,
        "payment_intent_id": "pi_1",
        "checkout_session_id": None,
        "needs_review": False,
        "review_reason": None,
        "refunds": [],
    }
    updated_at = datetime.fromisoformat(order["updated_at"])
    assert updated_at.utcoffset() is not None
    assert abs(updated_at.timestamp() * 1000 - time.time() * 1000) < 60_000


def test_orders_add_json_and_show_text(cli: Cli) -> None:
    """`orders add --json` prints the order document; `orders show` without --json is text."""
    added = json.loads(
        cli.ok("orders", "add", "o2", "--amount", "150", "--currency", "SEK", "--json").stdout
    )
    assert set(added) == ORDER_KEYS
    assert (added["order_id"], added["currency"], added["status"]) == ("o2", "SEK", "pending")

    shown = cli.ok("orders", "show", "o2").stdout
    assert "order_id: o2" in shown
    assert "status: pending" in shown
    with pytest.raises(json.JSONDecodeError):
        json.loads(shown)


def test_orders_add_duplicate_fails(cli: Cli) -> None:
    """Registering an order id twice is a failed operation (exit 1); the first stays as it was."""
    cli.ok("orders", "add", "o1", "--amount", "2000", "--currency", "EUR")
    result = cli("orders", "add", "o1", "--amount", "999", "--currency", "USD")
    assert_exit(result, 1)
    assert "o1" in result.stderr
    assert cli.json("orders", "show", "o1")["amount"] == 2000


def test_orders_add_with_taken_payment_link_fails_atomically(cli: Cli) -> None:
    """A PaymentIntent already linked to another order refuses the new order (nothing saved)."""
    cli.ok(
        "orders", "add", "o1", "--amount", "2000", "--currency", "EUR", "--payment-intent", "pi_x"
    )
    result = cli(
        "orders", "add", "o2", "--amount", "2000", "--currency", "EUR", "--payment-intent", "pi_x"
    )
    assert_exit(result, 1)
    assert_exit(cli("orders", "show", "o2"), 1)


def test_orders_show_unknown_fails(cli: Cli) -> None:
    """Showing an order that does not exist is a failed operation (exit 1) with a message."""
    result = cli("orders", "show", "nope", "--json")
    assert_exit(result, 1)
    assert result.stdout == ""
    assert "unknown order nope" in result.stderr


@pytest.mark.parametrize(
    ("amount", "currency", "option"),
    [
        ("2000", "EURO", "--currency"),
        ("2000", "E1", "--currency"),
        ("2000", "€UR", "--currency"),
        ("0", "EUR", "--amount"),
        ("-5", "EUR", "--amount"),
        ("12.5", "EUR", "--amount"),
    ],
)
def test_orders_add_bad_usage(cli: Cli, amount: str, currency: str, option: str) -> None:
    """A malformed currency or a non-positive amount is bad usage (exit 2) and registers nothing."""
    result = cli("orders", "add", "o1", "--amount", amount, "--currency", currency)
    assert_exit(result, 2)
    assert option in result.stderr
    assert cli.json("orders", "list") == []


def test_orders_list_json_and_filters(cli: Cli) -> None:
    """`orders list --json` is an array of orders; --status and --needs-review filter it."""
    for order_id in ("o1", "o2", "o3"):
        cli.ok("orders", "add", order_id, "--amount", "1000", "--currency", "EUR")
    _sql(
        cli.database_url,
        "UPDATE orders SET status = 'paid', amount_received = 1000 WHERE order_id = 'o2'",
    )
    _sql(
        cli.database_url,
        "UPDATE orders SET status = 'paid', amount_received = 900, needs_review = :flag, "
        "review_reason = 'amount_mismatch' WHERE order_id = 'o3'",
        flag=True,
    )

    everything = cli.json("orders", "list")
    assert isinstance(everything, list)
    assert [order["order_id"] for order in everything] == ["o1", "o2", "o3"]
    assert all(set(order) == ORDER_KEYS for order in everything)

    assert [o["order_id"] for o in cli.json("orders", "list", "--status", "paid")] == ["o2", "o3"]
    assert [o["order_id"] for o in cli.json("orders", "list", "--status", "pending")] == ["o1"]
    assert cli.json("orders", "list", "--status", "refunded") == []
    flagged = cli.json("orders", "list", "--needs-review")
    assert [(o["order_id"], o["review_reason"]) for o in flagged] == [("o3", "amount_mismatch")]

    rows = cli.ok("orders", "list").stdout.splitlines()
    assert len(rows) == 3
    assert "needs review" in rows[2]


def test_orders_list_unknown_status_is_bad_usage(cli: Cli) -> None:
    """Filtering on a status that does not exist is bad usage (exit 2)."""
    assert_exit(cli("orders", "list", "--status", "shipped"), 2)


# --- events -------------------------------------------------------------------------------------


def test_events_list_json_and_filters(cli: Cli) -> None:
    """`events list --json` is an array of the documented event keys; --status and --type filter."""
    record(cli.database_url, "evt_a", "payment_intent.succeeded", offset=1)
    record(cli.database_url, "evt_b", "charge.refund.updated", offset=2)
    record(cli.database_url, "evt_c", "customer.created", status="ignored", offset=3)

    listed = cli.json("events", "list")
    assert isinstance(listed, list)
    assert [event["event_id"] for event in listed] == ["evt_a", "evt_b", "evt_c"]
    assert all(set(event) == EVENT_KEYS for event in listed)
    first = listed[0]
    assert first == {
        **first,
        "type": "payment_intent.succeeded",
        "status": "pending",
        "attempts": 0,
        "last_error": None,
        "order_id": None,
    }
    received = datetime.fromisoformat(first["received_at"])
    assert round(received.timestamp() * 1000) == NOW_MS + 1

    by_status = cli.json("events", "list", "--status", "ignored")
    assert [event["event_id"] for event in by_status] == ["evt_c"]
    by_type = cli.json("events", "list", "--type", "charge.refund.updated")
    assert [event["event_id"] for event in by_type] == ["evt_b"]
    both = cli.json("events", "list", "--status", "pending", "--type", "customer.created")
    assert both == []
    assert cli.json("events", "list", "--status", "failed") == []

    rows = cli.ok("events", "list").stdout.splitlines()
    assert [row.split("\t")[0] for row in rows] == ["evt_a", "evt_b", "evt_c"]


def test_events_list_unknown_status_is_bad_usage(cli: Cli) -> None:
    """Event status is one of pending, processed, ignored, failed; anything else is exit 2."""
    assert_exit(cli("events", "list", "--status", "done"), 2)


def test_events_show(cli: Cli) -> None:
    """`events show --json` prints one event with the documented keys; text form is readable."""
    record(cli.database_url, "evt_a", "payment_intent.succeeded")
    park_as_failed(cli.database_url, "evt_a")

    shown = cli.json("events", "show", "evt_a")
    assert set(shown) == EVENT_KEYS
    assert (shown["status"], shown["attempts"], shown["last_error"]) == (
        "failed",
        3,
        "order_not_found",
    )
    assert "status: failed" in cli.ok("events", "show", "evt_a").stdout


def test_events_show_unknown_fails(cli: Cli) -> None:
    """Showing an unknown event is a failed operation (exit 1) with a message."""
    result = cli("events", "show", "evt_missing")
    assert_exit(result, 1)
    assert "unknown event evt_missing" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="nothing"),
        pytest.param(["--dry-run"], id="dry-run-only"),
        pytest.param(["--type", "charge.refund.updated"], id="type-only"),
        pytest.param(["evt_a", "--failed"], id="ids-and-failed"),
    ],
)
def test_events_replay_needs_ids_or_failed(cli: Cli, args: list[str]) -> None:
    """Replay needs event ids or --failed (not both): otherwise it is bad usage (exit 2)."""
    result = cli("events", "replay", *args)
    assert_exit(result, 2)
    assert "--failed" in result.stderr


def test_events_replay_failed_dry_run_changes_nothing(cli: Cli) -> None:
    """`replay --failed --dry-run` prints what it would replay and the count; changes nothing."""
    record(cli.database_url, "evt_a", "payment_intent.succeeded", offset=1)
    record(cli.database_url, "evt_b", "payment_intent.succeeded", offset=2)
    park_as_failed(cli.database_url, "evt_a")

    # REDIS_URL points at nothing: a dry run must not need Redis.
    result = cli.ok("events", "replay", "--failed", "--dry-run")

    lines = result.stdout.splitlines()
    assert lines[-1] == "1 event would be replayed"
    assert any("evt_a" in line for line in lines[:-1])
    assert "evt_b" not in result.stdout
    assert event_row(cli.database_url, "evt_a") == ("failed", 3, "order_not_found")
    assert event_row(cli.database_url, "evt_b") == ("pending", 0, None)


@pytest.mark.parametrize(
    ("failed", "count_line"),
    [
        (0, "0 events would be replayed"),
        (1, "1 event would be replayed"),
        (2, "2 events would be replayed"),
    ],
)
def test_events_replay_count_is_plural_unless_one(cli: Cli, failed: int, count_line: str) -> None:
    """The replay count reads `1 event` but `0 events` and `2 events`."""
    for index in range(failed):
        record(cli.database_url, f"evt_{index}", "payment_intent.succeeded", offset=index)
        park_as_failed(cli.database_url, f"evt_{index}")

    result = cli.ok("events", "replay", "--failed", "--dry-run")

    assert result.stdout.splitlines()[-1] == count_line


def queued_job_ids(client: redis.Redis) -> list[str]:
    """Job ids waiting in the CLI's arq queue."""
    raw = client.zrange(DEFAULT_QUEUE_NAME, 0, -1)
    assert isinstance(raw, list)
    return [job.decode() for job in raw]


@contextmanager
def resource_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the ResourceWarnings raised inside the block, including by garbage collection."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        found: list[warnings.WarningMessage] = []
        yield found
        gc.collect()
    found.extend(w for w in caught if issubclass(w.category, ResourceWarning))


def test_events_replay_failed_reopens_and_enqueues(cli: Cli, private_redis: LocalRedis) -> None:
    """`replay --failed` reopens failed events as pending, enqueues a job each, prints the count."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()  # a private server of this module: never the shared one
        record(cli.database_url, "evt_a", "payment_intent.succeeded", offset=1)
        record(cli.database_url, "evt_b", "charge.refund.updated", offset=2)
        park_as_failed(cli.database_url, "evt_a")

        result = cli.ok("events", "replay", "--failed", REDIS_URL=private_redis.url)

        assert result.stdout.strip().splitlines()[-1] == "replayed 1 event"
        status, attempts, _ = event_row(cli.database_url, "evt_a")
        assert (status, attempts) == ("pending", 0)
        assert event_row(cli.database_url, "evt_b") == ("pending", 0, None)
        jobs = queued_job_ids(client)
        assert len(jobs) == 1
        assert jobs[0].startswith("evt:evt_a:replay:")
        assert client.exists(f"arq:job:{jobs[0]}") == 1

        # Nothing is failed any more: a second replay finds nothing to do.
        again = cli.ok("events", "replay", "--failed", REDIS_URL=private_redis.url)
        assert again.stdout.strip().splitlines()[-1] == "replayed 0 events"
        assert len(queued_job_ids(client)) == 1
    finally:
        client.close()


def test_orders_add_heals_an_event_parked_for_want_of_it(
    cli: Cli, private_redis: LocalRedis
) -> None:
    """An event parked `failed` (order_not_found) is enqueued by `orders add` of its order and
    applied by the next worker run, with no replay."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()  # a private server of this module: never the shared one
        record(cli.database_url, "evt_late", "payment_intent.succeeded")
        cli.ok("events", "replay", "evt_late", REDIS_URL=private_redis.url)  # its first job
        env = cli_env(
            DATABASE_URL=cli.database_url,
            REDIS_URL=private_redis.url,
            RETRY_MAX_ATTEMPTS="1",
            LOG_FORMAT="json",
        )
        worker_run = ["worker", "--burst", "--metrics-port", "0"]
        parking = run_cli(worker_run, env=env)
        assert parking.returncode == 0, describe(parking)
        status, _, last_error = event_row(cli.database_url, "evt_late")
        assert status == "failed"
        assert last_error is not None
        assert last_error.startswith("order_not_found"), last_error

        added = cli.ok(
            "orders",
            "add",
            "o1",
            "--amount",
            "2000",
            "--currency",
            "EUR",
            REDIS_URL=private_redis.url,
        )

        assert '"heal.enqueued"' in added.stderr, added.stderr
        assert event_row(cli.database_url, "evt_late")[0] == "pending"
        jobs = queued_job_ids(client)
        assert len(jobs) == 1, jobs
        assert jobs[0].startswith("evt:evt_late:replay:"), jobs
        healing = run_cli(worker_run, env=env)
        assert healing.returncode == 0, describe(healing)
        assert event_row(cli.database_url, "evt_late")[0] == "processed"
        assert cli.json("orders", "show", "o1")["status"] == "paid"
    finally:
        client.close()


def test_events_replay_by_id_and_unknown_id(cli: Cli, private_redis: LocalRedis) -> None:
    """Replaying by id enqueues the known events and reports unknown ids with exit 1."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()  # a private server of this module: never the shared one
        record(cli.database_url, "evt_a", "payment_intent.succeeded")

        result = cli("events", "replay", "evt_a", "evt_nope", REDIS_URL=private_redis.url)

        assert_exit(result, 1)
        assert "replayed 1 event\n" in result.stdout
        assert "unknown event evt_nope" in result.stderr
        assert [job.split(":replay:")[0] for job in queued_job_ids(client)] == ["evt:evt_a"]
    finally:
        client.close()


def test_events_replay_closes_its_redis_connections(cli: Cli, private_redis: LocalRedis) -> None:
    """`events replay` closes the Redis connections it opened (no ResourceWarning, no leak)."""
    record(cli.database_url, "evt_a", "payment_intent.succeeded")
    park_as_failed(cli.database_url, "evt_a")

    with resource_warnings() as leaks:
        cli.ok("events", "replay", "--failed", REDIS_URL=private_redis.url)

    assert [str(w.message) for w in leaks] == []


# --- send ---------------------------------------------------------------------------------------


def test_send_paid_checkout_session_makes_the_order_paid(
    cli: Cli, private_redis: LocalRedis, tmp_path: Path
) -> None:
    """A `send --paid` checkout.session.completed, received by `serve` and reconciled by a burst
    worker, makes the registered order paid."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()  # a private server of this module: never the shared one
    finally:
        client.close()
    cli.ok("orders", "add", "o1", "--amount", "2000", "--currency", "EUR")
    env = cli_env(
        DATABASE_URL=cli.database_url,
        REDIS_URL=private_redis.url,
        WOOSHPAY_WEBHOOK_SECRETS=SEND_SECRET,
        LOG_FORMAT="json",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/wooshpay"
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port)]
    paid_session = ["send", "checkout.session.completed", "--paid"]
    with running_cli(serve, env=env, workdir=tmp_path) as server:
        wait_for_http("127.0.0.1", port, process=server)
        sent = cli.ok(*paid_session, "--order-id", "o1", "--url", url, "--secret", SEND_SECRET)
        assert "HTTP 200" in sent.stdout

    worker = run_cli(["worker", "--burst", "--metrics-port", "0"], env=env)

    assert worker.returncode == 0, describe(worker)
    order = cli.json("orders", "show", "o1")
    assert (order["status"], order["amount_received"], order["needs_review"]) == (
        "paid",
        2000,
        False,
    )
    assert order["checkout_session_id"].startswith("cs_")


def test_send_help_lists_event_types_and_explains_every_option() -> None:
    """`send --help` lists every event type it builds, one a line, and every option has help."""
    result = CliRunner().invoke(main, ["send", "--help"], env=dict.fromkeys(SETTINGS_VARIABLES))

    assert_exit(result, 0)
    assert {line.strip() for line in result.stdout.splitlines()} >= set(SUPPORTED_TYPES)
    unexplained = [p.name for p in send.params if isinstance(p, click.Option) and not p.help]
    assert unexplained == []
    assert "--paid" in result.stdout


# --- configuration errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("WEBHOOK_TOLERANCE_SECONDS", "abc"),
        ("DATABASE_URL", f"mysql://app:{PASSWORD}@db.example/orders"),
        ("REDIS_URL", f"http://:{PASSWORD}@redis.example:6379"),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["migrate"], id="migrate"),
        pytest.param(["orders", "list"], id="orders-list"),
        pytest.param(["events", "list"], id="events-list"),
        pytest.param(["worker", "--burst", "--metrics-port", "0"], id="worker"),
        pytest.param(["serve", "--host", "127.0.0.1", "--port", str(free_port())], id="serve"),
    ],
)
def test_malformed_setting_exits_2_naming_it(
    tmp_path: Path, command: list[str], name: str, value: str
) -> None:
    """A malformed setting stops any command with exit 2 and one stderr line naming the variable."""
    runner = Cli(f"sqlite:///{tmp_path / 'orders.db'}", _unreachable_redis())
    result = runner(*command, **{name: value, "WOOSHPAY_WEBHOOK_SECRETS": "whsec_x"})

    assert_exit(result, 2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert PASSWORD not in result.stderr


@pytest.mark.parametrize("secrets", [None, "", " , "])
def test_serve_without_secrets_exits_2_naming_it(tmp_path: Path, secrets: str | None) -> None:
    """`serve` refuses to start without WOOSHPAY_WEBHOOK_SECRETS: exit 2, one line naming it."""
    runner = Cli(f"sqlite:///{tmp_path / 'orders.db'}", _unreachable_redis())
    result = runner(
        "serve", "--host", "127.0.0.1", "--port", str(free_port()), WOOSHPAY_WEBHOOK_SECRETS=secrets
    )
    assert_exit(result, 2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "WOOSHPAY_WEBHOOK_SECRETS" in lines[0]


# --- help ---------------------------------------------------------------------------------------


def _command_paths(command: click.Command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            paths += _command_paths(sub, (*prefix, name))
    return paths


COMMAND_PATHS = _command_paths(main)


def test_every_documented_command_exists() -> None:
    """The command line offers every command the README's Commands table documents."""
    assert {" ".join(path) for path in COMMAND_PATHS if path} >= DOCUMENTED_COMMANDS


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda path: " ".join(path) or "main")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_of_every_command(path: tuple[str, ...], flag: str) -> None:
    """`--help` (and `-h`) of every command and group prints usage and exits 0."""
    result = CliRunner().invoke(main, [*path, flag], env=dict.fromkeys(SETTINGS_VARIABLES))
    assert_exit(result, 0)
    assert "Usage:" in result.stdout
    if path:
        assert path[-1] in result.stdout


def test_version() -> None:
    """`--version` prints the package version and exits 0."""
    result = CliRunner().invoke(main, ["--version"])
    assert_exit(result, 0)
    assert "0.1.0" in result.stdout


def test_python_dash_m_service_help() -> None:
    """`python -m service --help` runs the same command line."""
    result = subprocess.run(
        [sys.executable, "-m", "service", "--help"],
        cwd=PROJECT_ROOT,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    for command in ("serve", "worker", "dev", "migrate", "orders", "events", "send"):
        assert command in result.stdout
