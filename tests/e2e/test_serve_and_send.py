"""End to end: the real `wooshpay-webhooks` processes (serve, send, events, orders, worker).

One private redis-server and one migrated SQLite file for the module; the ingress runs as a
subprocess on a free loopback port and is driven only through the command line, as an operator
would. Process start-up dominates the run time, so independent commands run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.devtools.local_redis import LocalRedis, free_port, start_local_redis
from service.store.engine import create_engine
from service.store.inbox import EventRecord, list_events
from tests.support.leaks import webhook_secret
from tests.support.processes import (
    CliProcess,
    cli_env,
    describe,
    run_cli,
    run_cli_concurrently,
    start_cli,
    wait_for_http,
)

SECRET = webhook_secret("e2e")
HOST = "127.0.0.1"
# Planted in hand-written events: a full payload must never reach a log line.
PAYLOAD_MARKER = "payload-marker-7f3a9c"
CREATED_MS = 1_754_477_408_123


@dataclass
class Stack:
    """A running ingress with its private Redis and order store, and the env to reach them."""

    env: dict[str, str]
    database_url: str
    workdir: Path
    server: CliProcess
    url: str

    def send(self, *args: str, secret: str = SECRET) -> list[str]:
        """The argument list of a `send` to this ingress."""
        return ["send", *args, "--url", self.url, "--secret", secret]

    def ok(self, *args: str, **env: str) -> str:
        result = run_cli(args, env={**self.env, **env})
        assert result.returncode == 0, describe(result)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def concurrently(self, *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
        return run_cli_concurrently(commands, env=self.env)

    def inbox(self) -> dict[str, EventRecord]:
        """The recorded events, read straight from the order store."""
        return {record.event_id: record for record in asyncio.run(_list_events(self.database_url))}


async def _list_events(database_url: str) -> list[EventRecord]:
    engine = create_engine(database_url)
    try:
        return await list_events(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    """The CLI's queue name is fixed, so the processes get a Redis of their own."""
    server = start_local_redis()
    yield server
    server.stop()


def _start_server(
    env: dict[str, str], workdir: Path, *, migrate: bool = False
) -> tuple[CliProcess, str]:
    """`serve` on a free port, waited for on /healthz; `migrate` runs while it starts up."""
    port = free_port()
    server = start_cli(["serve", "--host", HOST, "--port", str(port)], env=env, workdir=workdir)
    try:
        if migrate:
            # The ingress touches the store only when a request arrives, so both start at once.
            migrated = run_cli(["migrate"], env=env)
            assert migrated.returncode == 0, describe(migrated)
            assert "revision" in migrated.stdout
        wait_for_http(HOST, port, "/healthz", process=server)
    except BaseException:
        server.kill()
        raise
    return server, f"http://{HOST}:{port}/webhooks/wooshpay"


@pytest.fixture(scope="module")
def module_stack(
    private_redis: LocalRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """`migrate` a fresh SQLite file, then `serve` on a free port, waited for on /healthz."""
    workdir = tmp_path_factory.mktemp("e2e")
    database_url = f"sqlite:///{workdir / 'orders.db'}"
    env = cli_env(
        WOOSHPAY_WEBHOOK_SECRETS=f"{webhook_secret('previous')}, {SECRET}",
        DATABASE_URL=database_url,
        REDIS_URL=private_redis.url,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    server, url = _start_server(env, workdir, migrate=True)
    stack = Stack(env, database_url, workdir, server, url)
    yield stack
    stack.server.kill()


@pytest.fixture
def stack(module_stack: Stack) -> Stack:
    """The module's stack with a running ingress (restarted if a test stopped it)."""
    if not module_stack.server.running():
        module_stack.server, module_stack.url = _start_server(
            module_stack.env, module_stack.workdir
        )
    return module_stack


def _answer(result: subprocess.CompletedProcess[str]) -> tuple[int, dict[str, Any]]:
    """Status and JSON body from send's `HTTP <status> <body>` line."""
    line = next((line for line in result.stdout.splitlines() if line.startswith("HTTP ")), None)
    assert line is not None, describe(result)
    _, status, body = line.split(" ", 2)
    document = json.loads(body)
    assert isinstance(document, dict)
    return int(status), document


def _sent_event_id(result: subprocess.CompletedProcess[str]) -> str:
    """The event id from send's `sending <type> <event id>` line."""
    line = next((line for line in result.stdout.splitlines() if line.startswith("sending ")), None)
    assert line is not None, describe(result)
    event_id = line.split()[-1]
    assert event_id.startswith("evt_"), line
    return event_id


def _hand_written_event(path: Path, *, event_id: str, order_id: str) -> Path:
    """A payment_intent.processing event for `order_id`, older than anything `send` builds."""
    document = {
        "id": event_id,
        "object": "event",
        "api_version": "1.0.1",
        "created": CREATED_MS,
        "livemode": False,
        "type": "payment_intent.processing",
        "data": {
            "object": {
                "id": f"pi_hand_{order_id}",
                "object": "payment_intent",
                "amount": 2000,
                "amount_received": None,
                "created": CREATED_MS,
                "currency": "eur",
                "merchant_order_id": order_id,
                "metadata": {"order_id": order_id, "note": PAYLOAD_MARKER},
                "payment_method_types": ["sofort"],
                "status": "processing",
            }
        },
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }
    path.write_text(json.dumps(document, indent=2))
    return path


def _json_log_lines(stderr: str) -> list[dict[str, Any]]:
    """Every non-empty stderr line, each of which must be a JSON log object."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "expected log lines on stderr"
    documents = []
    for line in lines:
        document = json.loads(line)
        assert isinstance(document, dict), line
        assert {"event", "level", "timestamp"} <= set(document), line
        documents.append(document)
    return documents


def test_send_signed_wrong_secret_and_file(stack: Stack) -> None:
    """`send` gets 200 for built and --file events (listed as pending), 400 for a wrong secret."""
    event_file = _hand_written_event(
        stack.workdir / "file-event.json", event_id="evt_hand_file", order_id="o-file"
    )
    built, wrong, from_file = stack.concurrently(
        stack.send("payment_intent.succeeded", "--order-id", "o-built"),
        stack.send("payment_intent.succeeded", "--order-id", "o-wrong", secret="whsec_nope"),
        stack.send("--file", str(event_file)),
    )

    assert built.returncode == 0, describe(built)
    built_status, built_answer = _answer(built)
    assert built_status == 200
    assert (built_answer["received"], built_answer["duplicate"]) == (True, False)
    built_id = _sent_event_id(built)
    assert built_answer["event_id"] == built_id

    assert wrong.returncode == 1, describe(wrong)
    wrong_status, wrong_answer = _answer(wrong)
    assert wrong_status == 400
    assert set(wrong_answer) == {"error"}

    assert from_file.returncode == 0, describe(from_file)
    file_status, file_answer = _answer(from_file)
    assert (file_status, file_answer["event_id"]) == (200, "evt_hand_file")

    listed = stack.json("events", "list")
    assert isinstance(listed, list)
    inbox = {event["event_id"]: event for event in listed}
    assert (inbox[built_id]["type"], inbox[built_id]["status"]) == (
        "payment_intent.succeeded",
        "pending",
    )
    assert (inbox["evt_hand_file"]["type"], inbox["evt_hand_file"]["status"]) == (
        "payment_intent.processing",
        "pending",
    )
    # The rejected delivery recorded nothing.
    assert _sent_event_id(wrong) not in inbox
    assert set(inbox) == set(stack.inbox())


def test_worker_reconciles_sent_events(stack: Stack) -> None:
    """Sent events wait as pending until `worker --burst` reconciles them: the order is paid."""
    event_file = _hand_written_event(
        stack.workdir / "o1-processing.json", event_id="evt_hand_o1", order_id="o1"
    )
    added, sent, from_file = stack.concurrently(
        ["orders", "add", "o1", "--amount", "2000", "--currency", "EUR"],
        stack.send("payment_intent.succeeded", "--order-id", "o1"),
        stack.send("--file", str(event_file)),
    )
    for result in (added, sent, from_file):
        assert result.returncode == 0, describe(result)
    succeeded_id = _answer(sent)[1]["event_id"]

    pending = stack.inbox()
    assert (pending[succeeded_id].status, pending["evt_hand_o1"].status) == ("pending", "pending")

    # One attempt each: events other tests sent for unregistered orders park at once instead of
    # keeping the burst worker waiting out their retry backoff.
    worker = run_cli(
        ["worker", "--burst", "--metrics-port", "0"], env={**stack.env, "RETRY_MAX_ATTEMPTS": "1"}
    )
    assert worker.returncode == 0, describe(worker)

    order = stack.json("orders", "show", "o1")
    assert (order["status"], order["amount_received"], order["needs_review"]) == (
        "paid",
        2000,
        False,
    )
    inbox = stack.inbox()
    assert (inbox[succeeded_id].status, inbox[succeeded_id].order_id) == ("processed", "o1")
    assert (inbox["evt_hand_o1"].status, inbox["evt_hand_o1"].order_id) == ("processed", "o1")
    _json_log_lines(worker.stderr)
    assert SECRET not in worker.stderr
    assert PAYLOAD_MARKER not in worker.stderr


def test_sigterm_stops_server_promptly_with_clean_json_logs(stack: Stack) -> None:
    """After accepted and rejected deliveries, SIGTERM stops `serve` with exit 0 within seconds,
    and everything it logged is JSON lines without the secret or payload contents."""
    _, so_far = stack.server.output()
    if '"webhook.accepted"' not in so_far or '"webhook.rejected"' not in so_far:
        # Run on its own, this test makes the deliveries the earlier tests would have made.
        event_file = _hand_written_event(
            stack.workdir / "sigterm.json", event_id="evt_sigterm", order_id="o-sigterm"
        )
        accepted, rejected = stack.concurrently(
            stack.send("--file", str(event_file)),
            stack.send("--file", str(event_file), secret="whsec_wrong"),
        )
        assert accepted.returncode == 0, describe(accepted)
        assert rejected.returncode == 1, describe(rejected)

    stopped = stack.server.stop(timeout_s=15)

    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stop_duration_s < 10
    for output in (stopped.stdout, stopped.stderr):
        assert SECRET not in output
        assert PAYLOAD_MARKER not in output
    events = [line["event"] for line in _json_log_lines(stopped.stderr)]
    assert "webhook.accepted" in events
    assert "webhook.rejected" in events
