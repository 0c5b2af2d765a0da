"""Slow and abusive HTTP clients against a real `serve` process (README).

One `wooshpay-webhooks serve` subprocess for the module, on a migrated SQLite file and a private
redis-server (the CLI's queue name is fixed), reached over loopback. Each test runs an attack
while genuine WooshPay deliveries keep arriving, and checks that the genuine ones are still
answered 200 promptly, that nothing the attacker sent is recorded or enqueued, and that the
process stays up (and, for floods, within a memory bound read from /proc/<pid>/status).

No fixed sleeps: the only `asyncio.sleep` is the pacing of a deliberately slow client; everything
else waits on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import pytest
import pytest_asyncio
from redis.asyncio import Redis
from sqlalchemy import func, select

from service.devtools.local_redis import LocalRedis, free_port, start_local_redis
from service.devtools.sender import EventOptions, build_event, encode_event
from service.queue import DEFAULT_QUEUE_NAME
from service.store.engine import create_engine
from service.store.schema import events
from service.timeouts import BODY_TIMEOUT_S
from service.wooshpay.signatures import sign_header
from tests.fuzz.conftest import RawAnswer, http_request, parse_status, raw_socket
from tests.support.leaks import webhook_secret
from tests.support.processes import (
    CliProcess,
    cli_env,
    describe,
    run_cli,
    start_cli,
    wait_for_http,
)
from tests.support.waiting import eventually

SECRET: Final = webhook_secret("abusive")
WRONG_SECRET: Final = "whsec_an_attacker_guess"
HOST: Final = "127.0.0.1"
PATH: Final = "/webhooks/wooshpay"
# A genuine delivery must be answered within this, whatever else is going on.
GOOD_LATENCY_S: Final = 2.0
# The deliberately slow client: one byte per PACE_S.
PACE_S: Final = 0.2
RSS_LIMIT_MIB: Final = 200.0
RSS_GROWTH_MIB: Final = 30.0
FLOOD_SIZE: Final = 2000
FLOOD_CONCURRENCY: Final = 64
IDLE_CONNECTIONS: Final = 300
# Server sockets of earlier requests that may open or close around a count of open fds.
LINGERING_FDS: Final = 10
PAYLOAD_MARKER: Final = "payload-marker-4b1d"


# --- the server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """The running `serve` process and what the tests read about it."""

    process: CliProcess
    port: int
    database_url: str
    redis_url: str

    @property
    def pid(self) -> int:
        return self.process.process.pid

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{PATH}"

    def status_field(self, name: str) -> str:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key == name:
                return value.strip()
        raise AssertionError(f"/proc/{self.pid}/status has no {name}")

    def rss_mib(self) -> float:
        kilobytes = int(self.status_field("VmRSS").split()[0])
        return kilobytes / 1024

    def cpu_s(self) -> float:
        """User + system CPU time the process has used so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        # After "pid (comm)": field 3 is fields[0]; utime and stime are fields 14 and 15.
        ticks = int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_text(self) -> str:
        stdout, stderr = self.process.output()
        return stdout + stderr

    def assert_alive(self) -> None:
        if not self.process.running():
            raise AssertionError(
                f"serve exited {self.process.process.returncode}\n{self.log_text()[-4000:]}"
            )


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    started = start_local_redis()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(private_redis: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("abusive")
    database_url = f"sqlite:///{workdir / 'orders.db'}"
    env = cli_env(
        WOOSHPAY_WEBHOOK_SECRETS=SECRET,
        DATABASE_URL=database_url,
        REDIS_URL=private_redis.url,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )
    migrated = run_cli(["migrate"], env=env)
    assert migrated.returncode == 0, describe(migrated)
    port = free_port()
    process = start_cli(["serve", "--host", HOST, "--port", str(port)], env=env, workdir=workdir)
    try:
        wait_for_http(HOST, port, "/healthz", process=process)
        yield Server(process, port, database_url, private_redis.url)
    finally:
        process.kill()


@pytest_asyncio.fixture
async def live(server: Server) -> AsyncIterator[Server]:
    """The module's server; after the test it must still be running and answering /healthz."""
    server.assert_alive()
    yield server
    server.assert_alive()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{server.port}/healthz") as response,
    ):
        assert response.status == 200


# --- deliveries ---------------------------------------------------------------------------------


def genuine_body() -> tuple[str, bytes]:
    event = build_event(
        "payment_intent.succeeded",
        EventOptions(order_id=f"abuse-{uuid.uuid4().hex[:12]}"),
        now_ms=int(time.time() * 1000),
    )
    return str(event["id"]), encode_event(event)


def signature(body: bytes, secret: str = SECRET) -> str:
    return sign_header(body, secret, timestamp=int(time.time()))


@dataclass
class Tally:
    """Statuses and latencies of the genuine deliveries made during an attack."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def check(self, *, at_least: int) -> None:
        assert len(self.statuses) >= at_least, f"only {len(self.statuses)} genuine deliveries"
        assert set(self.statuses) == {200}, sorted(set(self.statuses))
        slowest = max(self.latencies)
        assert slowest < GOOD_LATENCY_S, f"a genuine delivery took {slowest:.2f} s"


async def deliver_genuine(session: aiohttp.ClientSession, url: str, tally: Tally) -> None:
    event_id, body = genuine_body()
    headers = {"Content-Type": "application/json", "Wooshpay-Signature": signature(body)}
    started = time.monotonic()
    async with session.post(url, data=body, headers=headers) as response:
        await response.read()
        tally.statuses.append(response.status)
    tally.latencies.append(time.monotonic() - started)
    tally.event_ids.append(event_id)


async def genuine_traffic(url: str, tally: Tally, stop: asyncio.Event) -> None:
    """One genuine delivery after another (one in flight) until `stop` is set."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        while not stop.is_set():
            await deliver_genuine(session, url, tally)


@contextlib.asynccontextmanager
async def while_genuine_traffic(url: str) -> AsyncIterator[Tally]:
    """Genuine deliveries flow for as long as the block runs."""
    tally, stop = Tally(), asyncio.Event()
    task = asyncio.create_task(genuine_traffic(url, tally, stop))
    try:
        yield tally
    finally:
        stop.set()
        await task


async def inbox_ids(database_url: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return set((await connection.execute(select(events.c.event_id))).scalars())
    finally:
        await engine.dispose()


async def inbox_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            query = select(func.count()).select_from(events)
            return int((await connection.execute(query)).scalar_one())
    finally:
        await engine.dispose()


async def queue_depth(redis_url: str) -> int:
    client = Redis.from_url(redis_url)
    try:
        return int(await client.zcard(DEFAULT_QUEUE_NAME))
    finally:
        await client.aclose()


def raw_connection(
    port: int,
) -> contextlib.AbstractAsyncContextManager[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    return raw_socket(HOST, port)


async def read_answer(reader: asyncio.StreamReader, *, timeout_s: float) -> RawAnswer:
    """Read until the server closes (our requests say Connection: close) or the deadline."""
    received = bytearray()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while chunk := await reader.read(65536):
                received += chunk
    return RawAnswer(parse_status(bytes(received)), bytes(received))


async def read_head(reader: asyncio.StreamReader, *, timeout_s: float) -> RawAnswer:
    """Read until the response head (status line and headers) has arrived, or the deadline: the
    moment a server answers, even if it then lingers before closing."""
    received = bytearray()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(timeout_s):
            while b"\r\n\r\n" not in received and (chunk := await reader.read(65536)):
                received += chunk
    return RawAnswer(parse_status(bytes(received)), bytes(received))


def head(headers: Sequence[tuple[str, str]]) -> bytes:
    """The request head only: http_request with an empty body."""
    return http_request(list(headers))


async def slow_delivery(port: int, *, paced_bytes: int, abort: bool = False) -> RawAnswer:
    """A genuine delivery whose body arrives one byte per PACE_S for `paced_bytes` bytes, then
    all at once; `abort` resets the connection instead of finishing the body."""
    _, body = genuine_body()
    request_head = head(
        [("Content-Length", str(len(body))), ("Wooshpay-Signature", signature(body))]
    )
    async with raw_connection(port) as (reader, writer):
        writer.write(request_head)
        for index in range(paced_bytes):
            writer.write(body[index : index + 1])
            await writer.drain()
            await asyncio.sleep(PACE_S)  # the deliberately slow client's pacing
        if abort:
            writer.transport.abort()
            return RawAnswer(None, b"")
        writer.write(body[paced_bytes:])
        await writer.drain()
        return await read_answer(reader, timeout_s=10)


# --- (a) slow bodies ----------------------------------------------------------------------------


async def test_slow_body_clients_do_not_delay_genuine_deliveries(live: Server) -> None:
    """20 clients send their declared body one byte per 0.2 s (5 s), 5 more give up halfway and
    reset; meanwhile genuine deliveries keep being answered 200 within GOOD_LATENCY_S. The slow
    but complete deliveries are then accepted; the aborted ones leave no trace."""
    rows_before = await inbox_count(live.database_url)
    async with while_genuine_traffic(live.url) as tally:
        slow = [slow_delivery(live.port, paced_bytes=25) for _ in range(20)]
        aborted = [slow_delivery(live.port, paced_bytes=12, abort=True) for _ in range(5)]
        answers = await asyncio.gather(*slow, *aborted)
    tally.check(at_least=10)
    assert [answer.status for answer in answers[:20]] == [200] * 20, answers[0].data[:300]
    assert await inbox_count(live.database_url) == rows_before + len(tally.statuses) + 20


# --- (b) idle connections -----------------------------------------------------------------------


async def test_idle_connections_do_not_block_genuine_deliveries(live: Server) -> None:
    """300 connections held open at once (100 silent, 100 stopped mid request line, 100 stopped
    after the headers of a declared body): genuine deliveries are still answered 200 promptly,
    and once the idle clients go away the server releases their sockets."""
    fds_before = live.open_fds()
    partial_line = b"POST /webhooks/wooshpay HT"
    _, body = genuine_body()
    headers_only = head(
        [("Content-Length", str(len(body))), ("Wooshpay-Signature", signature(body))]
    )
    async with contextlib.AsyncExitStack() as stack:
        for index in range(IDLE_CONNECTIONS):
            _, writer = await stack.enter_async_context(raw_connection(live.port))
            writer.write([b"", partial_line, headers_only][index % 3])
            await writer.drain()

        async def all_accepted() -> bool:
            # Connections of the module's earlier tests may still be closing while these open,
            # so the count before is an upper bound of what stays open: allow for a few.
            return live.open_fds() >= fds_before + IDLE_CONNECTIONS - LINGERING_FDS

        await eventually(all_accepted, timeout_s=10)
        tally = Tally()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(deliver_genuine(session, live.url, tally) for _ in range(30)))
        tally.check(at_least=30)
        assert set(await inbox_ids(live.database_url)) >= set(tally.event_ids)

    async def released() -> bool:
        return live.open_fds() <= fds_before + LINGERING_FDS

    await eventually(released, timeout_s=10)


# --- (c) a flood of forged deliveries -----------------------------------------------------------


def forged(index: int) -> tuple[bytes, dict[str, str]]:
    """A realistic body with one kind of bad signature, chosen by `index`."""
    _, body = genuine_body()
    now = int(time.time())
    kinds: list[dict[str, str]] = [
        {"Wooshpay-Signature": signature(body, WRONG_SECRET)},
        {},
        {"Wooshpay-Signature": "t=1,v1=" + "0" * 64},
        {"Wooshpay-Signature": sign_header(body, SECRET, timestamp=now - 3600)},
        {"Wooshpay-Signature": signature(body + b" ")},
        {"Wooshpay-Signature": "garbage"},
    ]
    return body, {"Content-Type": "application/json", **kinds[index % len(kinds)]}


async def test_bad_signature_flood_with_genuine_deliveries(live: Server) -> None:
    """2,000 forged deliveries (wrong secret, no header, malformed, stale, tampered) interleaved
    with 200 genuine ones, 64 at a time: every forged one 400, every genuine one 200; only the
    genuine ones are recorded and enqueued; RSS stays under 200 MiB and grows < 30 MiB."""
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=FLOOD_CONCURRENCY),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as session:
        warmup = Tally()
        for _ in range(20):
            await deliver_genuine(session, live.url, warmup)
            body, headers = forged(0)
            async with session.post(live.url, data=body, headers=headers) as response:
                await response.read()
        rows_before = await inbox_count(live.database_url)
        queued_before = await queue_depth(live.redis_url)
        rss_before = live.rss_mib()

        forged_statuses: list[int] = []

        async def forge(index: int) -> None:
            body, headers = forged(index)
            async with session.post(live.url, data=body, headers=headers) as response:
                await response.read()
                forged_statuses.append(response.status)

        tally = Tally()
        work = [forge(i) for i in range(FLOOD_SIZE)]
        work += [deliver_genuine(session, live.url, tally) for _ in range(200)]
        random.Random(7).shuffle(work)
        await asyncio.gather(*work)

    rss_after = live.rss_mib()
    assert forged_statuses == [400] * FLOOD_SIZE, sorted(set(forged_statuses))
    assert set(tally.statuses) == {200}
    assert len(tally.statuses) == 200
    assert await inbox_count(live.database_url) == rows_before + 200
    assert await queue_depth(live.redis_url) == queued_before + 200
    assert rss_after < RSS_LIMIT_MIB, f"RSS {rss_after:.0f} MiB"
    assert rss_after - rss_before < RSS_GROWTH_MIB, f"RSS {rss_before:.0f} -> {rss_after:.0f} MiB"


# --- (d) the body timeout -----------------------------------------------------------------------


async def test_incomplete_bodies_are_answered_408_after_the_body_timeout(live: Server) -> None:
    """A client that stops sending its declared body, and one that trickles it one byte per
    0.2 s, are answered 408 once BODY_TIMEOUT_S has passed since the request began (not much
    later); genuine deliveries are served meanwhile; neither is recorded."""
    timeout_s = BODY_TIMEOUT_S
    rows_before = await inbox_count(live.database_url)

    async def stalled() -> tuple[RawAnswer, float]:
        _, body = genuine_body()
        request = head(
            [("Content-Length", str(len(body))), ("Wooshpay-Signature", signature(body))]
        )
        async with raw_connection(live.port) as (reader, writer):
            started = time.monotonic()
            writer.write(request + body[:10])
            await writer.drain()
            answer = await read_head(reader, timeout_s=timeout_s + 3)
            return answer, time.monotonic() - started

    async def trickling() -> tuple[RawAnswer, float]:
        _, body = genuine_body()
        request = head(
            [("Content-Length", str(len(body))), ("Wooshpay-Signature", signature(body))]
        )
        async with raw_connection(live.port) as (reader, writer):
            started = time.monotonic()
            writer.write(request)
            answered = asyncio.create_task(read_head(reader, timeout_s=timeout_s + 3))
            for index in range(len(body)):
                if answered.done():
                    break
                with contextlib.suppress(ConnectionError):
                    writer.write(body[index : index + 1])
                    await writer.drain()
                await asyncio.sleep(PACE_S)  # the deliberately slow client's pacing
            answer = await answered
            return answer, time.monotonic() - started

    async with while_genuine_traffic(live.url) as tally:
        results = await asyncio.gather(stalled(), trickling())
    tally.check(at_least=10)
    for answer, elapsed in results:
        assert answer.status == 408, answer.data[:300]
        assert timeout_s - 0.5 <= elapsed <= timeout_s + 2, f"answered after {elapsed:.1f} s"
    assert await inbox_count(live.database_url) == rows_before + len(tally.statuses)


# --- (e) compressed bodies ----------------------------------------------------------------------


def gzip_bomb(decompressed_mib: int = 1024) -> bytes:
    """~1 MB that gunzips to `decompressed_mib` MiB of zeros (concatenated gzip members)."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (decompressed_mib // 16)


async def test_decompression_bombs_cost_no_more_than_their_bytes(live: Server) -> None:
    """Ten unsigned ~1 MB `Content-Encoding: gzip` bodies that inflate to 1 GiB each: the server
    must not spend more CPU on them than on any other 1 MB of rejected input (it answers them
    4xx), genuine deliveries are served promptly meanwhile, and RSS stays bounded."""
    bomb = gzip_bomb()
    request = http_request(
        [
            ("Content-Length", str(len(bomb))),
            ("Content-Encoding", "gzip"),
            ("Wooshpay-Signature", "t=1,v1=" + "0" * 64),
        ],
        bomb,
    )

    async def send_bomb() -> RawAnswer:
        async with raw_connection(live.port) as (reader, writer):
            with contextlib.suppress(ConnectionError):
                writer.write(request)
                await writer.drain()
            return await read_answer(reader, timeout_s=30)

    rows_before = await inbox_count(live.database_url)
    cpu_before = live.cpu_s()
    async with while_genuine_traffic(live.url) as tally:
        answers = await asyncio.gather(*(send_bomb() for _ in range(10)))
    cpu_spent = live.cpu_s() - cpu_before
    statuses = sorted({str(answer.status) for answer in answers})
    # Genuine deliveries cost ~5 ms of CPU each; a 1 MB rejected body costs about as much.
    budget_s = 1.0 + 0.02 * len(tally.statuses)
    observed = (
        f"10 bombs answered {statuses}; server CPU {cpu_spent:.1f} s (budget {budget_s:.1f} s); "
        f"slowest of {len(tally.statuses)} genuine deliveries {max(tally.latencies):.2f} s"
    )
    assert set(statuses) <= {"None", "400", "413", "415"}, observed
    assert cpu_spent < budget_s, observed
    tally.check(at_least=1)
    assert live.rss_mib() < RSS_LIMIT_MIB
    assert await inbox_count(live.database_url) == rows_before + len(tally.statuses)


# --- (f) what malformed requests leave in the logs ----------------------------------------------


async def test_malformed_requests_do_not_write_payloads_to_the_logs(live: Server) -> None:
    """Full payloads never appear in logs. Requests that the HTTP parser refuses carry a
    marker in their body; after they are answered, no server log line contains it."""
    document = build_event(
        "payment_intent.succeeded",
        EventOptions(order_id=f"abuse-{uuid.uuid4().hex[:8]}"),
        now_ms=int(time.time() * 1000),
    )
    document["data"]["object"]["description"] = PAYLOAD_MARKER * 20
    body = json.dumps(document).encode()
    sig = ("Wooshpay-Signature", signature(body))
    requests = {
        # HTTP/1.0 with no Content-Length: the body reads as data after the request.
        "http/1.0 body": http_request([sig], body).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1),
        # Chunked, but the first chunk-size line is the payload itself.
        "chunk size": http_request(
            [("Transfer-Encoding", "chunked"), sig], body + b"\r\n0\r\n\r\n"
        ),
        # Two requests pipelined after Connection: close.
        "after close": http_request([("Content-Length", "0"), sig]) + b"POST / HTTP/1.1\r\n" + body,
    }
    statuses = {}
    for name, request in requests.items():
        async with raw_connection(live.port) as (reader, writer):
            writer.write(request)
            await writer.drain()
            statuses[name] = (await read_answer(reader, timeout_s=10)).status
    assert all(status == 400 for status in statuses.values()), statuses

    # A genuine delivery afterwards: once its log line is written, so are the earlier ones.
    tally = Tally()
    async with aiohttp.ClientSession() as session:
        await deliver_genuine(session, live.url, tally)

    async def logged() -> bool:
        return tally.event_ids[0] in live.log_text()

    await eventually(logged, timeout_s=10)
    leaked = [line[:300] for line in live.log_text().splitlines() if PAYLOAD_MARKER in line]
    assert not leaked, f"{len(leaked)} log lines carry the payload, e.g. {leaked[0]}"
