"""Building, signing and inspecting WooshPay webhook deliveries in ingress tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from arq.connections import ArqRedis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.sender import EventOptions, build_event, encode_event
from service.ingress.app import WEBHOOK_PATH
from service.queue import create_redis
from service.store.schema import events
from service.wooshpay.signatures import SIGNATURE_HEADER, sign_header
from tests.conftest import SECRET
from tests.support.leaks import add_customer

__all__ = [
    "SECRET",
    "SIGNATURE_HEADER",
    "WEBHOOK_PATH",
    "Client",
    "Delivery",
    "arq_pool",
    "delivery",
    "event_dict",
    "get_json",
    "inbox_rows",
    "metric_samples",
    "metric_value",
    "open_client",
    "post",
    "queued_job_ids",
    "scrape",
    "send",
    "signed_headers",
]

Client = TestClient[web.Request, web.Application]


def event_dict(
    event_type: str = "payment_intent.succeeded",
    *,
    order_id: str = "order-1",
    now_ms: int | None = None,
) -> dict[str, Any]:
    """A realistic WooshPay event (fresh random id) as a mutable dict, naming the canary customer
    (tests.support.leaks) where WooshPay names a customer."""
    created = int(time.time() * 1000) if now_ms is None else now_ms
    event = build_event(event_type, EventOptions(order_id=order_id), now_ms=created)
    return add_customer(event)


def signed_headers(
    body: bytes, secret: str = SECRET, *, timestamp: int | None = None
) -> dict[str, str]:
    """Headers WooshPay would send with `body`, signed now (or at `timestamp`) with `secret`."""
    signed_at = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_header(body, secret, timestamp=signed_at),
    }


@dataclass(frozen=True)
class Delivery:
    """One signed delivery: the body bytes exactly as sent and the headers that go with it."""

    event_id: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def delivery(
    event: Mapping[str, Any] | None = None,
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> Delivery:
    """Encode `event` (a fresh payment_intent.succeeded by default) and sign it."""
    document = event_dict() if event is None else event
    body = encode_event(document)
    return Delivery(
        str(document.get("id")), body, signed_headers(body, secret, timestamp=timestamp)
    )


async def inbox_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Every recorded inbox row, as plain dicts."""
    query = select(
        events.c.event_id,
        events.c.type,
        events.c.status,
        events.c.body,
        events.c.created_ms,
        events.c.attempts,
    ).order_by(events.c.event_id)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [dict(row._mapping) for row in rows]


async def queued_job_ids(redis: ArqRedis, queue_name: str) -> list[str]:
    """Job ids waiting in an arq queue."""
    raw = await redis.zrange(queue_name, 0, -1)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in raw]


MetricKey = tuple[str, tuple[tuple[str, str], ...]]


def metric_samples(text: str) -> dict[MetricKey, float]:
    """Parse a Prometheus text exposition into {(sample name, sorted labels): value}."""
    samples: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def metric_value(samples: Mapping[MetricKey, float], name: str, **labels: str) -> float | None:
    """The value of one sample, or None when the exposition does not have it."""
    return samples.get((name, tuple(sorted(labels.items()))))


@contextlib.asynccontextmanager
async def arq_pool(redis_url: str, queue_name: str) -> AsyncIterator[ArqRedis]:
    """An ArqRedis on `queue_name` whose connections are all closed on exit, queue deleted.

    `ArqRedis.aclose()` alone leaves a connection pool that was passed in (as `create_redis`
    does) open, so its sockets leak and surface later as ResourceWarnings.
    """
    pool = create_redis(redis_url, queue_name=queue_name)
    try:
        yield pool
    finally:
        try:
            await pool.delete(queue_name)
        finally:
            await pool.aclose(close_connection_pool=True)


async def open_client(app: web.Application) -> Client:
    """A started test client (and server) around `app`; close it with `await client.close()`."""
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def post(client: Client, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
    """POST a delivery to the webhook path; return the status and the decoded JSON answer."""
    async with client.post(WEBHOOK_PATH, data=body, headers=dict(headers)) as response:
        return response.status, await response.json()


async def send(client: Client, sent: Delivery) -> tuple[int, Any]:
    return await post(client, sent.body, sent.headers)


async def get_json(client: Client, path: str) -> tuple[int, Any]:
    async with client.get(path) as response:
        return response.status, await response.json()


async def scrape(client: Client) -> dict[MetricKey, float]:
    """GET /metrics and parse it."""
    async with client.get("/metrics") as response:
        assert response.status == 200
        return metric_samples(await response.text())
