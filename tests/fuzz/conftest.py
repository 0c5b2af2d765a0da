"""Fixtures and helpers shared by the fuzz tests.

- `client`: the ingress (`create_app`) on the test's order store (SQLite and PostgreSQL, via the
  root conftest's `engine`/`settings`) and the test's own arq queue, behind aiohttp's TestServer.
- `raw_exchange`: one hand-written HTTP/1.1 request over a plain socket, for the requests that
  aiohttp's client refuses to send (CR/LF in header values, duplicate Content-Length, ...).
- `fuzz_budget`: hypothesis example counts. The default run is kept short; set FUZZ_EXAMPLES to a
  larger number (e.g. FUZZ_EXAMPLES=2000) for a deep run, which also walks every event type.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

import pytest_asyncio
from arq.connections import ArqRedis
from arq.constants import job_key_prefix
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ingress.app import create_app
from service.settings import Settings
from tests.support.webhooks import Client, arq_pool, open_client

DEFAULT_EXAMPLES: Final = 40
RAW_TIMEOUT_S: Final = 10.0
_STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/\d\.\d (\d{3}) ")


def fuzz_budget(default: int = DEFAULT_EXAMPLES) -> int:
    """Examples per property: `default`, or FUZZ_EXAMPLES when that is set (a deep run)."""
    raw = os.environ.get("FUZZ_EXAMPLES", "").strip()
    return int(raw) if raw else default


def deep_run() -> bool:
    """True when FUZZ_EXAMPLES asks for more than the default budget."""
    return fuzz_budget() > DEFAULT_EXAMPLES


@pytest_asyncio.fixture
async def redis(redis_url: str, queue_name: str) -> AsyncIterator[ArqRedis]:
    """The test's own arq queue; afterwards its jobs' keys and the queue are deleted and the
    connection pool closed. (arq job keys are global, not per queue: a leftover `arq:job:evt:<id>`
    would make a later run's enqueue of the same event id a no-op.)"""
    async with arq_pool(redis_url, queue_name) as pool:
        yield pool
        job_ids = await pool.zrange(queue_name, 0, -1)
        if job_ids:
            await pool.delete(*(job_key_prefix.encode() + job_id for job_id in job_ids))


@pytest_asyncio.fixture
async def client(settings: Settings, engine: AsyncEngine, redis: ArqRedis) -> AsyncIterator[Client]:
    """The ingress on the test's order store and arq queue."""
    started = await open_client(create_app(settings, engine=engine, redis=redis))
    yield started
    await started.close()


@contextlib.asynccontextmanager
async def raw_socket(
    host: str, port: int | None
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A plain TCP connection to the server, closed on the way out (for hand-written HTTP)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """What a server sent back on a raw connection: status (None when it sent nothing)."""

    status: int | None
    data: bytes

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]


def parse_status(data: bytes) -> int | None:
    """The final status: interim `100 Continue` answers are skipped."""
    for match in _STATUS_LINE.finditer(data):
        status = int(match.group(1))
        if status >= 200:
            return status
    return None


async def raw_exchange(
    host: str, port: int, request: bytes, *, timeout_s: float = RAW_TIMEOUT_S
) -> RawAnswer:
    """Send `request` as is, then read until the server closes (requests say Connection: close)
    or `timeout_s` passes. A reset after the status line arrived still counts as an answer.
    """
    reader, writer = await asyncio.open_connection(host, port)
    received = bytearray()
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError, TimeoutError):
            # The server may close (reset) while we still write an oversized request; a server
            # that never answers leaves `received` empty (status None) after `timeout_s`.
            async with asyncio.timeout(timeout_s):
                await writer.drain()
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return RawAnswer(parse_status(bytes(received)), bytes(received))


def http_request(
    headers: list[tuple[str, str]] | list[tuple[bytes, bytes]],
    body: bytes = b"",
    *,
    path: str = "/webhooks/wooshpay",
    close: bool = True,
) -> bytes:
    """A hand-written POST; headers are written exactly as given (no validation at all)."""
    lines = [f"POST {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    if close:
        lines.append(b"Connection: close")
    for name, value in headers:
        name_bytes = name.encode("latin-1") if isinstance(name, str) else name
        value_bytes = value.encode("latin-1") if isinstance(value, str) else value
        lines.append(name_bytes + b": " + value_bytes)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
