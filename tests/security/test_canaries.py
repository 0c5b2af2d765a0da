"""The canaries and the search for them: found however they are printed, never mistaken, and a
test whose output holds one fails without printing it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis

from service.devtools.sender import EventOptions, build_event, encode_event
from service.wooshpay.events import parse_envelope, parse_payment_event
from service.wooshpay.signatures import sign_header
from tests.chaos.logs import summarise_logs
from tests.conftest import SECRET
from tests.support import flows, leak_watch
from tests.support.leaks import (
    CUSTOMER_NAME,
    DATABASE_PASSWORD,
    REDIS_PASSWORD,
    WEBHOOK_SECRET_TOKEN,
    add_customer,
    find_leaks,
    redact,
    with_database_password,
    with_redis_password,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_RUN_TIMEOUT_S = 120


@pytest.mark.parametrize(
    "printed",
    [
        pytest.param(repr((SECRET,)), id="repr"),
        # How structlog shows a long local variable: cut after 80 characters.
        pytest.param(f"{f'Settings(webhook_secrets=({SECRET!r}, ...'[:80]!r}+120", id="cut"),
        pytest.param(
            f"{f'WorkerDeps(settings=Settings(webhook_secrets=({SECRET!r}'[:66]!r}+9",
            id="cut-in-token",
        ),
        pytest.param(SECRET.encode().hex(), id="hex"),
        pytest.param(f"\\x{SECRET.encode().hex()}", id="bytea"),
        # The token starts 6, 8 and 7 bytes in: at each of the three offsets in a base64 quantum.
        pytest.param(base64.urlsafe_b64encode(SECRET.encode()).decode(), id="base64-offset-0"),
        pytest.param(base64.b64encode(f"k={SECRET}".encode()).decode(), id="base64-offset-1"),
        pytest.param(base64.b64encode(f"={SECRET}".encode()).decode(), id="base64-offset-2"),
    ],
)
def test_the_webhook_secret_is_found_however_printed(printed: str) -> None:
    """The secret's token is found in a repr, a truncated repr, hex and base64 at any offset."""
    assert find_leaks(f"log line: {printed}") == ["webhook secret"]


def test_every_canary_is_found_in_a_json_log_line() -> None:
    """Passwords in URLs and the customer in an event body are found in a JSON log line."""
    line = json.dumps(
        {
            "database_url": with_database_password("postgresql://postgres@db:5432/orders"),
            "redis_url": f"redis://default:{REDIS_PASSWORD}@redis:6379/0",
            "body": encode_event(
                add_customer(flows.event(flows.new_clock(), "payment_intent.succeeded", "o-1"))
            ).decode(),
        }
    )
    assert find_leaks(line) == [
        "database password",
        "Redis password",
        "customer name",
        "customer street",
    ]


def test_values_that_may_print_are_not_canaries() -> None:
    """The development secret, a guessed secret, masked URLs, the signature made with the
    secret and an event without the customer hold no canary."""
    body = encode_event(build_event("payment_intent.succeeded", EventOptions("o-1"), now_ms=1))
    printed = [
        "whsec_dev_local_only",
        "whsec_an_attacker_guess",
        "postgresql://postgres:***@127.0.0.1:5432/test",
        "redis://default:***@127.0.0.1:6379/0",
        sign_header(body, SECRET, timestamp=1_754_477_408),
        body.decode(),
        redact(f"{SECRET} {DATABASE_PASSWORD} {CUSTOMER_NAME}"),
    ]
    assert find_leaks("\n".join(printed)) == []


def test_the_customer_goes_where_wooshpay_names_one() -> None:
    """PaymentIntents get billing details and Checkout Sessions customer details; the events
    still parse as before."""
    clock = flows.new_clock()
    payment = flows.event(clock, "payment_intent.succeeded", "o-1")
    session = flows.event(clock, "checkout.session.completed", "o-1")
    billing = payment["data"]["object"]["payment_method_data"]["billing_details"]
    assert billing["name"] == CUSTOMER_NAME
    assert billing["address"]["country"] == "DE"
    assert session["data"]["object"]["customer_details"]["name"] == CUSTOMER_NAME
    for item in (payment, session):
        parse_payment_event(parse_envelope(encode_event(item)))


def test_the_database_password_is_added_only_where_none_is() -> None:
    """A PostgreSQL URL without a password gets the canary; one with a password and a SQLite
    URL stay as they are."""
    assert DATABASE_PASSWORD in with_database_password("postgresql://postgres@h:5432/test")
    own = "postgresql://app:real-password@h:5432/test"
    assert with_database_password(own) == own
    assert with_database_password("sqlite:///./orders.db") == "sqlite:///./orders.db"


def test_the_redis_password_is_one_the_server_accepts(redis_url: str) -> None:
    """The suite's Redis URL carries the canary password when the server accepts it, and the
    URL it uses works."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        assert client.ping()
    finally:
        client.close()
    plain = redis_url.replace(f"default:{REDIS_PASSWORD}@", "")
    assert with_redis_password(plain) == redis_url


def test_a_watched_file_is_searched_line_by_line_as_it_grows(tmp_path: Path) -> None:
    """A leak in a watched file is reported once its line is complete, with the file and line,
    never with the value."""
    log = tmp_path / "worker.log"
    log.write_text("started\n")
    process = subprocess.Popen(["sleep", "30"])  # stands for the process writing the file
    try:
        leak_watch.watch_file(log, process)
        with log.open("a") as file:
            file.write(f"ok\nsettings={SECRET[:30]}")
        first = leak_watch.new_findings()
        with log.open("a") as file:
            file.write("\n")
        second = leak_watch.new_findings()
    finally:
        process.kill()
        process.wait()
    log.write_text(f"{SECRET}\n")  # rewritten after its process exited and was read: not searched
    assert leak_watch.new_findings() == []
    assert leak_watch.new_findings() == []
    assert first == []
    assert second == [
        f"webhook secret ({WEBHOOK_SECRET_TOKEN[:4]}..., 20 characters) in {log}, line 3"
    ]


def test_a_test_that_prints_a_canary_fails_without_showing_it(tmp_path: Path) -> None:
    """Under the suite's plugin, a test printing a canary fails naming it and where, and pytest's
    report shows neither the canary nor its value; a quiet test passes."""
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    test_file = tmp_path / "test_leaky.py"
    test_file.write_text(
        textwrap.dedent(
            """
            from tests.support.leaks import webhook_secret

            def test_prints_the_secret():
                print("configured", webhook_secret("demo"))

            def test_prints_nothing_secret():
                print("whsec_dev_local_only")
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            "-c",
            str(ini),
            str(test_file),
            "-rA",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=PLUGIN_RUN_TIMEOUT_S,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 failed, 1 passed" in output, output
    assert "webhook secret (iezb..., 20 characters) in captured stdout call, line 1" in output
    assert WEBHOOK_SECRET_TOKEN not in output


def test_the_chaos_summary_names_leaks_in_service_logs(tmp_path: Path) -> None:
    """The chaos run's log summary lists a log line holding a canary, by file and line."""
    (tmp_path / "worker-0.0.log").write_text(f'{{"event":"ok"}}\n{{"deps":"{SECRET}"}}\n')
    (tmp_path / "ingress-0.0.log").write_text('{"event":"webhook.accepted"}\n')

    summary = summarise_logs(tmp_path)

    assert summary.leaks == [
        f"webhook secret (iezb..., 20 characters) in {tmp_path / 'worker-0.0.log'}, line 2"
    ]
