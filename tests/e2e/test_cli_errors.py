"""End to end: the real command line answers an order store it cannot use in one line.

Each case runs the real `wooshpay-webhooks` processes against a store with one problem: a
PostgreSQL port nobody listens on, a database that does not exist on the real server, an SQLite
file and a PostgreSQL database that were never migrated. Every command must exit 1 with exactly
one stderr line naming the problem and its fix, never a traceback (unless LOG_LEVEL=DEBUG) and
never the password.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from service.cli.common import CommandLine
from service.cli.main import main
from service.cli.store_access import StoreProblem, in_store
from service.devtools.local_redis import LocalRedis, free_port, start_local_redis
from service.devtools.sender import EventOptions, build_event, encode_event
from service.domain.event_status import EventStatus
from service.secrets import SecretUrl
from service.store.engine import create_engine
from service.store.inbox import NewEvent
from service.store.orders import list_orders
from service.wooshpay.events import parse_envelope
from tests.support import databases
from tests.support.inbox_records import record_event
from tests.support.processes import (
    SETTINGS_VARIABLES,
    cli_env,
    describe,
    run_cli,
    run_cli_concurrently,
)

PASSWORD = "hunter2-never-printed"
NO_SCHEMA = "error: the order store has no schema yet: run 'wooshpay-webhooks migrate'"
# Store commands an operator runs by hand; none of them needs Redis before the store answers.
OPS_COMMANDS: dict[str, list[str]] = {
    "orders add": ["orders", "add", "o1", "--amount", "2000", "--currency", "EUR"],
    "orders show": ["orders", "show", "o1"],
    "orders list": ["orders", "list"],
    "events list": ["events", "list"],
    "events show": ["events", "show", "evt_1"],
    "events replay": ["events", "replay", "--failed"],
}
MIGRATE = ["migrate"]
WORKER = ["worker", "--burst", "--metrics-port", "0"]


@dataclass(frozen=True)
class StoreCase:
    """An order store with one problem, the line every command must answer, and the commands."""

    database_url: str
    expected: str
    commands: dict[str, list[str]] = field(default_factory=dict)


def _unreachable_redis() -> str:
    # Nothing listens here: a command that touched Redis before the store would fail otherwise.
    return f"redis://127.0.0.1:{free_port()}/0"


def _env(database_url: str, **settings: str) -> dict[str, str]:
    return cli_env(
        DATABASE_URL=database_url, REDIS_URL=_unreachable_redis(), LOG_FORMAT="json", **settings
    )


def _unreachable_postgres() -> StoreCase:
    port = free_port()  # free a moment ago: nothing listens there
    return StoreCase(
        f"postgresql://wooshpay:{PASSWORD}@127.0.0.1:{port}/orders",
        f"error: order store unreachable at postgresql://wooshpay:***@127.0.0.1:{port}/orders"
        " (connection refused): is the database running?",
        {**OPS_COMMANDS, "migrate": MIGRATE},
    )


def _missing_database(admin_url: str) -> StoreCase:
    name = f"wooshpay_missing_{uuid.uuid4().hex[:12]}"
    url = make_url(admin_url).set(database=name, password=PASSWORD)
    return StoreCase(
        url.render_as_string(hide_password=False),
        f'error: database "{name}" does not exist: create it, then run \'wooshpay-webhooks'
        " migrate'",
        {**OPS_COMMANDS, "migrate": MIGRATE, "worker": WORKER},
    )


def _unmigrated_sqlite(path: Path) -> StoreCase:
    sqlite3.connect(path).close()  # an existing, empty SQLite file
    return StoreCase(f"sqlite:///{path}", NO_SCHEMA, {**OPS_COMMANDS, "worker": WORKER})


@pytest.fixture(
    params=[
        "unreachable-postgres",
        pytest.param("missing-database", marks=pytest.mark.postgres),
        "unmigrated-sqlite",
        pytest.param("unmigrated-postgres", marks=pytest.mark.postgres),
    ]
)
def store_case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreCase]:
    """One order store problem; PostgreSQL cases skip (or fail with CI=true) without a server."""
    if request.param == "unreachable-postgres":
        yield _unreachable_postgres()
    elif request.param == "unmigrated-sqlite":
        yield _unmigrated_sqlite(tmp_path / "orders.db")
    else:
        request.getfixturevalue("postgres_url")  # the server answers, or the case is skipped
        admin = databases.postgres_admin_url()
        if request.param == "missing-database":
            yield _missing_database(admin)
            return
        url = asyncio.run(databases.create_database(admin))
        try:
            yield StoreCase(url, NO_SCHEMA, {**OPS_COMMANDS, "worker": WORKER})
        finally:
            asyncio.run(databases.drop_database(admin, url))


def _problems(name: str, result: subprocess.CompletedProcess[str], expected: str) -> list[str]:
    """What is wrong with how `name` answered, if anything."""
    found = []
    if result.returncode != 1:
        found.append("exit status is not 1")
    if result.stderr.splitlines() != [expected]:
        found.append("stderr is not exactly the expected line")
    if "Traceback" in result.stderr:
        found.append("a traceback was printed")
    if PASSWORD in result.stdout + result.stderr:
        found.append("the password was printed")
    if result.stdout:
        found.append("something was printed on stdout")
    return [f"{name}: {', '.join(found)}\n{describe(result)}"] if found else []


def test_every_command_answers_a_store_problem_in_one_line(store_case: StoreCase) -> None:
    """Every command exits 1 with one stderr line naming the problem and its fix, no traceback."""
    names = list(store_case.commands)
    results = run_cli_concurrently(
        [store_case.commands[name] for name in names], env=_env(store_case.database_url)
    )

    problems = [
        problem
        for name, result in zip(names, results, strict=True)
        for problem in _problems(name, result, store_case.expected)
    ]
    assert problems == [], "\n".join(problems)


def test_debug_level_shows_the_traceback_but_no_password(store_case: StoreCase) -> None:
    """With LOG_LEVEL=DEBUG the traceback comes first, then the same one-line error."""
    result = run_cli(["orders", "list"], env=_env(store_case.database_url, LOG_LEVEL="DEBUG"))

    assert result.returncode == 1, describe(result)
    assert "Traceback (most recent call last):" in result.stderr
    assert result.stderr.splitlines()[-1] == store_case.expected
    assert PASSWORD not in result.stderr


def _non_log_lines(stderr: str) -> list[str]:
    """The stderr lines that are not JSON log objects."""
    lines = []
    for line in stderr.splitlines():
        try:
            is_log = isinstance(json.loads(line), dict)
        except ValueError:
            is_log = False
        if not is_log:
            lines.append(line)
    return lines


@pytest.mark.parametrize(
    "case", ["unreachable-postgres", pytest.param("missing-database", marks=pytest.mark.postgres)]
)
def test_dev_stops_in_one_line_on_a_store_it_cannot_migrate(
    case: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    """`dev` migrates first: a store it cannot reach or that does not exist ends it in one line."""
    if case == "missing-database":
        request.getfixturevalue("postgres_url")
        store = _missing_database(databases.postgres_admin_url())
    else:
        store = _unreachable_postgres()
    env = {**_env(store.database_url), "REDIS_URL": redis_url}  # dev only pings it

    result = run_cli(["dev", "--port", str(free_port())], env=env)

    assert result.returncode == 1, describe(result)
    assert _non_log_lines(result.stderr) == [store.expected], describe(result)
    assert PASSWORD not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """The worker's queue name is fixed, so it gets a Redis of its own."""
    server = start_local_redis()
    yield server
    server.stop()


def test_worker_waits_out_an_unreachable_store(private_redis: LocalRedis) -> None:
    """A worker started during a store outage logs it and runs (here: a burst over no jobs)."""
    store = _unreachable_postgres()
    env = {**_env(store.database_url), "REDIS_URL": private_redis.url}

    result = run_cli(WORKER, env=env)

    assert result.returncode == 0, describe(result)
    assert _non_log_lines(result.stderr) == [], describe(result)
    logged = [json.loads(line) for line in result.stderr.splitlines()]
    outage = [line for line in logged if line["event"] == "worker.store_unavailable"]
    assert [line["reason"] for line in outage] == ["connection refused"], describe(result)
    assert PASSWORD not in result.stderr


async def _record_pending_event(database_url: str) -> str:
    body = encode_event(build_event("payment_intent.succeeded", EventOptions(), now_ms=1))
    engine = create_engine(database_url)
    try:
        envelope = parse_envelope(body)
        assert await record_event(engine, NewEvent(envelope, body, EventStatus.PENDING), now_ms=1)
    finally:
        await engine.dispose()
    return envelope.event_id


def test_replay_with_redis_unreachable_is_one_line(tmp_path: Path) -> None:
    """`events replay` with Redis down exits 1 with one line saying the sweeper will enqueue."""
    database_url = f"sqlite:///{tmp_path / 'orders.db'}"
    asyncio.run(databases.migrate(database_url))
    event_id = asyncio.run(_record_pending_event(database_url))

    result = run_cli(["events", "replay", event_id], env=_env(database_url))

    assert result.returncode == 1, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, describe(result)
    assert lines[0].startswith("error: Redis is unreachable"), describe(result)
    assert "sweeper" in lines[0]


def _other_store_problem(case: str, tmp_path: Path) -> tuple[str, str]:
    """(DATABASE_URL, the error it must give) for a problem less common than the cases above."""
    if case == "missing-directory":
        url = f"sqlite:///{tmp_path / 'nowhere' / 'orders.db'}"
        return url, (
            f"cannot open the order store at {url} (unable to open database file): does its"
            " directory exist, and may this user write there?"
        )
    if case == "not-a-database":
        path = tmp_path / "orders.db"
        path.write_text("these are not the pages of an SQLite database\n" * 100)
        return (
            f"sqlite:///{path}",
            f"sqlite:///{path} is not an SQLite database: check DATABASE_URL",
        )
    if case == "unknown-host":
        return f"postgresql://wooshpay:{PASSWORD}@no-such-host.invalid/orders", (
            "order store unreachable at postgresql://wooshpay:***@no-such-host.invalid/orders"
            " (host not found): check the host in DATABASE_URL"
        )
    login = make_url(databases.postgres_admin_url()).set(
        username="wooshpay_nobody", password=PASSWORD
    )
    masked = login.render_as_string(hide_password=True)
    return login.render_as_string(hide_password=False), (
        f'the order store at {masked} refused the login (role "wooshpay_nobody" does not exist):'
        " check the user and password in DATABASE_URL"
    )


@pytest.mark.parametrize(
    "case",
    [
        "missing-directory",
        "not-a-database",
        "unknown-host",
        pytest.param("unknown-role", marks=pytest.mark.postgres),
    ],
)
def test_other_store_problems_name_their_fix(
    case: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Every store access (`in_store`) turns these problems into one message with the fix."""
    if case == "unknown-role":
        request.getfixturevalue("postgres_url")
    url, expected = _other_store_problem(case, tmp_path)

    with pytest.raises(StoreProblem) as caught:
        in_store(SecretUrl(url), list_orders)

    assert str(caught.value) == expected
    assert caught.value.outage == (case == "unknown-host")


# --- failures that are not the store's --------------------------------------------------------


def _exploding_command_line() -> click.Group:
    @click.group(cls=CommandLine)
    def command_line() -> None:
        """A command line with one broken command."""

    @command_line.command()
    def explode() -> None:
        raise RuntimeError(f"a detail that may be private: {PASSWORD}")

    return command_line


@pytest.fixture
def root_level() -> Iterator[logging.Logger]:
    """The root logger (its level decides whether tracebacks print), restored afterwards."""
    root = logging.getLogger()
    level = root.level
    yield root
    root.setLevel(level)


def test_unexpected_error_is_one_line_with_its_type(root_level: logging.Logger) -> None:
    """An unexpected exception prints its type and the LOG_LEVEL=DEBUG hint, nothing else."""
    root_level.setLevel(logging.INFO)

    result = CliRunner().invoke(_exploding_command_line(), ["explode"])

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unexpected RuntimeError; rerun with LOG_LEVEL=DEBUG to see the traceback"
    ]


def test_unexpected_error_at_debug_level_shows_the_traceback(root_level: logging.Logger) -> None:
    """With the DEBUG level the traceback (its message included) precedes the one-line error."""
    root_level.setLevel(logging.DEBUG)

    result = CliRunner().invoke(_exploding_command_line(), ["explode"])

    assert result.exit_code == 1
    assert "Traceback (most recent call last):" in result.stderr
    assert result.stderr.splitlines()[-1] == "error: unexpected RuntimeError"


# --- send ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["payment_intent.succeeded", "--paid"], id="payment-intent"),
        pytest.param(["checkout.session.expired", "--paid"], id="expired-session"),
        pytest.param(["--file", __file__, "--paid"], id="file"),
    ],
)
def test_send_paid_on_another_event_is_bad_usage(args: list[str]) -> None:
    """`--paid` on any event but checkout.session.completed is bad usage (exit 2): nothing sent."""
    unreachable = f"http://127.0.0.1:{free_port()}/webhooks/wooshpay"
    result = CliRunner().invoke(
        main,
        ["send", *args, "--url", unreachable, "--secret", "whsec_x"],
        env=dict.fromkeys(SETTINGS_VARIABLES),
    )

    assert result.exit_code == 2, result.output
    assert "--paid applies only to checkout.session.completed" in result.stderr
    assert "sending" not in result.stdout
