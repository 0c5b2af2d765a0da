"""Integration tests of the ingress's HTTP-level answers: bodies refused from their headers (413
before any body byte, never a `100 Continue` for them) and JSON for 404, 405 and 417.

The app is `create_app` behind aiohttp's TestServer, on SQLite and PostgreSQL with real Redis.
Requests a well-behaved client would not send (a declared body that never comes) are written by
hand over a plain socket; every read waits on a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import pytest
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict

from service.ingress import app as http
from service.settings import Settings
from tests.fuzz.conftest import RawAnswer, parse_status, raw_socket
from tests.support.webhooks import (
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
    Client,
    delivery,
    inbox_rows,
    metric_value,
    scrape,
)

# An answer from the headers alone takes milliseconds; waiting for a body that never comes
# takes BODY_TIMEOUT_S (10 s), so this deadline tells the two apart.
PROMPT_S = 3.0
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
OVER_LIMIT = 3 * 1024 * 1024


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EventDict]]:
    """Every structlog entry the ingress emits during the test."""
    # A fresh lazy logger: one cached by an earlier configure_logging() would bypass the capture.
    monkeypatch.setattr(http, "log", structlog.get_logger("service.ingress.app"))
    with structlog.testing.capture_logs() as entries:
        yield entries


def raw_connection(
    client: Client,
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return raw_socket(client.server.host, client.server.port)


async def read_until(
    reader: asyncio.StreamReader, marker: bytes, *, timeout_s: float = PROMPT_S
) -> RawAnswer:
    """Read until `marker` has arrived, the server closes, or the deadline passes."""
    received = bytearray()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while marker not in received and (chunk := await reader.read(65536)):
                received += chunk
    return RawAnswer(parse_status(bytes(received)), bytes(received))


async def read_to_close(reader: asyncio.StreamReader, *, timeout_s: float) -> bytes:
    """Everything the server sends until it closes the connection; fails at the deadline."""
    received = bytearray()
    async with asyncio.timeout(timeout_s):
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                received += chunk
    return bytes(received)


def request_head(
    method: str, path: str, headers: list[tuple[str, str]], *, close: bool = True
) -> bytes:
    """A request head written by hand (the body, if any, is sent separately)."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if close:
        lines.append("Connection: close")
    lines += [f"{name}: {value}" for name, value in headers]
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


def declared_head(content_length: int, *, expect: bool = False, close: bool = True) -> bytes:
    """A webhook request head declaring `content_length` body bytes, without the body."""
    headers = [("Content-Type", "application/json"), ("Content-Length", str(content_length))]
    if expect:
        headers.append(("Expect", "100-continue"))
    return request_head("POST", WEBHOOK_PATH, headers, close=close)


def json_body(answer: RawAnswer) -> object:
    """The answer's JSON document; its Content-Type must say JSON."""
    head, _, body = answer.data.partition(b"\r\n\r\n")
    assert b"\r\ncontent-type: application/json" in head.lower(), head
    return json.loads(body)


async def assert_counted_and_logged_413(client: Client, logs: list[EventDict]) -> None:
    samples = await scrape(client)
    assert metric_value(samples, "wooshpay_webhooks_rejected_total", reason="body_too_large") == 1
    assert metric_value(samples, "wooshpay_webhooks_received_total") == 1
    rejected = [entry for entry in logs if entry["event"] == "webhook.rejected"]
    assert [(e["status"], e["reason"]) for e in rejected] == [(413, "body_too_large")]


# --- bodies refused from their headers ----------------------------------------------------------


@pytest.mark.parametrize("declared", [1024 * 1024 + 1, 99_999_999], ids=["limit+1", "99999999"])
async def test_declared_oversize_body_is_413_before_it_is_sent(
    client: Client,
    settings: Settings,
    engine: AsyncEngine,
    logs: list[EventDict],
    declared: int,
) -> None:
    """A Content-Length over the limit is answered 413 (JSON, `Connection: close`) from the
    headers alone, without waiting for the body, and counted and logged as body_too_large."""
    assert declared > settings.max_body_bytes
    async with raw_connection(client) as (reader, writer):
        writer.write(declared_head(declared))
        await writer.drain()
        answer = await read_until(reader, b'"}')

    assert answer.status == 413, answer.data[:300]
    assert json_body(answer) == {"error": "request body too large"}
    assert b"\r\nconnection: close\r\n" in answer.data.lower()
    await assert_counted_and_logged_413(client, logs)
    assert await inbox_rows(engine) == []


async def test_expect_continue_with_oversize_body_is_413_without_100(
    client: Client, engine: AsyncEngine, logs: list[EventDict]
) -> None:
    """`Expect: 100-continue` with a body over the limit (what curl sends for a 3 MB upload) is
    answered 413 at once, and never invited with `100 Continue`."""
    async with raw_connection(client) as (reader, writer):
        writer.write(declared_head(OVER_LIMIT, expect=True))
        await writer.drain()
        answer = await read_until(reader, b'"}')

    assert answer.status == 413, answer.data[:300]
    assert b"100 Continue" not in answer.data
    assert json_body(answer) == {"error": "request body too large"}
    await assert_counted_and_logged_413(client, logs)
    assert await inbox_rows(engine) == []


async def test_body_after_an_early_413_is_dropped_not_parsed(
    client: Client, settings: Settings, engine: AsyncEngine
) -> None:
    """After the early 413 on a keep-alive connection, a body that still arrives (here made of
    pipelined requests, then one more request) is read and dropped: no second answer, and the
    server closes the connection."""
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    declared = settings.max_body_bytes + 1
    body = (pipelined * (declared // len(pipelined) + 1))[:declared]
    async with raw_connection(client) as (reader, writer):
        writer.write(declared_head(declared, close=False))
        await writer.drain()
        first = await read_until(reader, b'"}')
        assert first.status == 413, first.data[:300]
        writer.write(body + pipelined)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        rest = await read_to_close(reader, timeout_s=PROMPT_S)

    assert b"HTTP/1.1" not in rest, rest[:300]
    assert await inbox_rows(engine) == []


@pytest.mark.parametrize("signed", [True, False], ids=["signed-200", "unsigned-400"])
async def test_expect_continue_within_limit_gets_100_then_its_answer(
    client: Client, engine: AsyncEngine, signed: bool
) -> None:
    """`Expect: 100-continue` with a body within the limit is still invited with `100 Continue`,
    then answered as usual: 200 and recorded when signed, 400 when not."""
    sent = delivery()
    headers = [("Content-Length", str(len(sent.body))), ("Expect", "100-continue")]
    if signed:
        headers.append((SIGNATURE_HEADER, sent.headers[SIGNATURE_HEADER]))
    async with raw_connection(client) as (reader, writer):
        writer.write(request_head("POST", WEBHOOK_PATH, headers))
        await writer.drain()
        invited = await read_until(reader, CONTINUE)
        assert invited.data == CONTINUE
        writer.write(sent.body)
        await writer.drain()
        answer = await read_until(reader, b"}")

    if signed:
        assert answer.status == 200, answer.data[:300]
        assert json_body(answer) == {
            "received": True,
            "event_id": sent.event_id,
            "duplicate": False,
        }
        assert [row["event_id"] for row in await inbox_rows(engine)] == [sent.event_id]
    else:
        assert answer.status == 400, answer.data[:300]
        assert json_body(answer) == {"error": "signature header is missing"}
        assert await inbox_rows(engine) == []


# --- 404, 405 and 417 in JSON -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("POST", "/webhooks"),
        ("POST", WEBHOOK_PATH + "/"),
        ("GET", "/webhooks/stripe"),
        ("DELETE", "/v1/orders/ord_1"),
    ],
)
async def test_unknown_path_is_404_in_json(client: Client, method: str, path: str) -> None:
    """Any method on a path the ingress does not serve is answered 404 `{"error": "not found"}`
    as application/json."""
    async with client.request(method, path, data=b"{}") as response:
        assert response.status == 404
        assert response.content_type == "application/json"
        assert await response.json() == {"error": "not found"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", WEBHOOK_PATH, "POST"),
        ("PUT", WEBHOOK_PATH, "POST"),
        ("OPTIONS", WEBHOOK_PATH, "POST"),
        ("POST", "/healthz", "GET,HEAD"),
        ("DELETE", "/readyz", "GET,HEAD"),
        ("PATCH", "/metrics", "GET,HEAD"),
    ],
)
async def test_other_method_is_405_in_json_with_allow(
    client: Client, engine: AsyncEngine, method: str, path: str, allow: str
) -> None:
    """A method a path does not serve is answered 405 `{"error": "method not allowed"}` as
    application/json, with an Allow header listing exactly the path's methods."""
    sent = delivery()
    async with client.request(method, path, data=sent.body, headers=sent.headers) as response:
        assert response.status == 405
        assert response.content_type == "application/json"
        assert response.headers["Allow"] == allow
        assert await response.json() == {"error": "method not allowed"}
    assert await inbox_rows(engine) == []


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("POST", "/nowhere", 404), ("GET", WEBHOOK_PATH, 405), ("POST", "/healthz", 405)],
)
async def test_unrouted_request_with_expect_is_answered_without_100(
    client: Client, method: str, path: str, status: int
) -> None:
    """A request with `Expect: 100-continue` that will be refused 404 or 405 gets its JSON
    answer at once, without being invited to send its body."""
    request = request_head(method, path, [("Content-Length", "2"), ("Expect", "100-continue")])
    async with raw_connection(client) as (reader, writer):
        writer.write(request)
        await writer.drain()
        answer = await read_until(reader, b'"}')

    assert answer.status == status, answer.data[:300]
    assert b"100 Continue" not in answer.data
    assert json_body(answer) == {"error": "not found" if status == 404 else "method not allowed"}


@pytest.mark.parametrize("path", [WEBHOOK_PATH, "/healthz"])
async def test_unknown_expectation_is_417_in_json(client: Client, path: str) -> None:
    """An Expect header other than 100-continue is answered 417 as application/json."""
    method = "POST" if path == WEBHOOK_PATH else "GET"
    async with client.request(method, path, data=b"{}", headers={"Expect": "teapot"}) as response:
        assert response.status == 417
        assert response.content_type == "application/json"
        assert await response.json() == {"error": "unsupported Expect header"}
