"""The aiohttp ingress: verify, record durably, enqueue, answer fast.

Status codes (the contract): 200 once the event is durably recorded (`duplicate` for a known
event id); 400 with a reason for bad signatures and bodies; 413 over the size limit; 405 for other
methods; 503 when the order store cannot record the event, so WooshPay retries (it retries 18 times
over 72 hours, so a 503 is a delay, never a loss). Never 500 for bad input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import web
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.events import InvalidEvent, WebhookEvent, parse_envelope
from service.inbox_writer import InboxWriter, StoreUnavailable
from service.metrics import CONTENT_TYPE_LATEST, IngressMetrics
from service.queue import QUEUE_ERRORS, create_redis, queue_depth
from service.settings import Settings
from service.signatures import SignatureError, verify
from service.store.engine import create_engine, is_sqlite
from service.store.inbox import NewEvent, inbox_summary

log = structlog.get_logger("service.http")

WEBHOOK_PATH = "/webhooks/wooshpay"
SIGNATURE_HEADER = "Wooshpay-Signature"
PROBE_TIMEOUT_S = 2.0
# The whole request body must arrive within this long (408 otherwise).
BODY_TIMEOUT_S = 10.0
# Concurrent inbox transactions on PostgreSQL (SQLite has a single writer). Fewer, larger batches
# cost less CPU per event (tests/bench: 151-160 us/event with one or two, 168 with four); the
# second keeps one slow commit from holding up the next batch.
POSTGRES_CONCURRENT_BATCHES = 2

# Errors that mean "the store or the queue is unreachable", as opposed to bugs.
STORE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


@dataclass
class Ingress:
    """Everything a request needs; built by create_app, opened and closed by its cleanup_ctx."""

    settings: Settings
    metrics: IngressMetrics
    engine: AsyncEngine | None = None
    redis: ArqRedis | None = None
    writer: InboxWriter | None = None
    clock: Callable[[], float] = time.time

    def require_engine(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("ingress store not opened")
        return self.engine

    def require_redis(self) -> ArqRedis:
        if self.redis is None:
            raise RuntimeError("ingress queue not opened")
        return self.redis

    def require_writer(self) -> InboxWriter:
        if self.writer is None:
            raise RuntimeError("ingress inbox writer not started")
        return self.writer


INGRESS = web.AppKey("ingress", Ingress)


class Rejected(Exception):
    """A request answered with an error status; `reason` is safe to return and log."""

    def __init__(
        self, status: int, reason: str, code: str, fields: dict[str, str] | None = None
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code
        self.fields = fields or {}  # what is known of the event, for the log line


def create_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    redis: ArqRedis | None = None,
    metrics: IngressMetrics | None = None,
) -> web.Application:
    """Build the ingress app. Connections passed in are used (and left open); others are
    created on startup and closed on cleanup, never at import time."""
    ingress = Ingress(settings, metrics or IngressMetrics(), engine, redis)
    # No automatic decompression: the signature covers the raw body as sent, and an unsigned
    # gzip bomb must cost no more than its own bytes.
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args={"auto_decompress": False}
    )
    app[INGRESS] = ingress
    app.cleanup_ctx.append(_resources(ingress))
    app.router.add_post(WEBHOOK_PATH, receive_webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_view)
    return app


def _resources(
    ingress: Ingress,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(_: web.Application) -> AsyncIterator[None]:
        own_engine = ingress.engine is None
        own_redis = ingress.redis is None
        if own_engine:
            ingress.engine = create_engine(ingress.settings.database_url)
        if own_redis:
            ingress.redis = create_redis(ingress.settings.redis_url)
        engine = ingress.require_engine()
        ingress.writer = InboxWriter(
            engine,
            ingress.require_redis(),
            concurrency=1 if is_sqlite(engine) else POSTGRES_CONCURRENT_BATCHES,
            clock=ingress.clock,
            on_deferred=ingress.metrics.enqueue_deferred.inc,
        )
        ingress.writer.start()
        yield
        # cleanup_ctx runs after in-flight handlers finished, so nothing is enqueueing now.
        await ingress.writer.close()
        if own_redis and ingress.redis is not None:
            await ingress.redis.aclose()
        if own_engine and ingress.engine is not None:
            await ingress.engine.dispose()

    return resources


async def receive_webhook(request: web.Request) -> web.Response:
    ingress = request.app[INGRESS]
    started = time.perf_counter()
    ingress.metrics.received.inc()
    try:
        response = await _accept(request, ingress, started)
    except Rejected as rejected:
        ingress.metrics.rejected.labels(rejected.code).inc()
        response = _json(rejected.status, {"error": rejected.reason})
        _log_outcome(
            "webhook.rejected", response.status, started, reason=rejected.code, **rejected.fields
        )
    ingress.metrics.request_latency.observe(time.perf_counter() - started)
    return response


async def _accept(request: web.Request, ingress: Ingress, started: float) -> web.Response:
    body = await _read_body(request)
    try:
        verify(
            request.headers.get(SIGNATURE_HEADER),
            body,
            ingress.settings.webhook_secrets,
            now=ingress.clock(),
            tolerance_s=ingress.settings.tolerance_s,
        )
    except SignatureError as error:
        raise Rejected(400, str(error), error.code) from None
    try:
        event = parse_envelope(body)
    except InvalidEvent as error:
        raise Rejected(400, str(error), "invalid_event") from None
    # The event's fields go on its log line directly: binding them as structlog contextvars
    # (and clearing them per request) cost more than the rest of the line.
    fields = {"event_id": event.event_id, "event_type": event.type}
    is_new = await _record(ingress, event, body, fields)
    if is_new:
        ingress.metrics.count_accepted(event.type)
    else:
        ingress.metrics.duplicates.inc()
    _log_outcome(
        "webhook.accepted" if is_new else "webhook.duplicate",
        200,
        started,
        ignored=not event.in_scope,
        **fields,
    )
    return _json(200, {"received": True, "event_id": event.event_id, "duplicate": not is_new})


async def _read_body(request: web.Request) -> bytes:
    try:
        if request.content.is_eof():
            # The whole body came in with the headers (a webhook's usual case): nothing to wait
            # for, so no timer to arm and cancel on every request.
            return await request.read()
        async with asyncio.timeout(BODY_TIMEOUT_S):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise Rejected(413, "request body too large", "body_too_large") from None
    except TimeoutError:
        # A client trickling its body must not hold a handler (and a socket) for ever.
        raise Rejected(408, "request body not received in time", "body_timeout") from None
    except (web.RequestPayloadError, ConnectionResetError):
        raise Rejected(400, "request body could not be read", "unreadable_body") from None


async def _record(
    ingress: Ingress, event: WebhookEvent, body: bytes, fields: dict[str, str]
) -> bool:
    # Events outside the reconciled set are acknowledged and recorded as `ignored`.
    item = NewEvent(event, body, "pending" if event.in_scope else "ignored")
    try:
        recorded = await ingress.require_writer().record(item)
    except StoreUnavailable:
        raise Rejected(503, "order store unavailable", "store_unavailable", fields) from None
    return recorded.is_new


def _json(status: int, document: dict[str, object]) -> web.Response:
    """web.json_response, with orjson: the answer to every webhook request."""
    return web.Response(
        body=orjson.dumps(document), status=status, content_type="application/json", charset="utf-8"
    )


def _log_outcome(name: str, status: int, started: float, **fields: object) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    log.info(name, status=status, duration_ms=duration_ms, **fields)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the order store answers; Redis is reported but does not gate readiness,
    because events are still accepted (and recorded) while Redis is down."""
    ingress = request.app[INGRESS]
    database = await _probe(_ping_database(ingress.require_engine()))
    redis = await _probe(ingress.require_redis().ping())
    status = 200 if database else 503
    return web.json_response(
        {
            "status": "ready" if database else "unavailable",
            "database": "ok" if database else "unavailable",
            "redis": "ok" if redis else "unavailable",
        },
        status=status,
    )


async def _ping_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _probe(check: Awaitable[object]) -> bool:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check
    except (*STORE_ERRORS, *QUEUE_ERRORS):
        return False
    return True


async def metrics_view(request: web.Request) -> web.Response:
    ingress = request.app[INGRESS]
    await _refresh_gauges(ingress)
    return web.Response(
        body=ingress.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _refresh_gauges(ingress: Ingress) -> None:
    """Gauges read the store and the queue at scrape time; an outage leaves the last values."""
    metrics = ingress.metrics
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            counts, oldest_ms = await inbox_summary(ingress.require_engine())
        for status in ("pending", "processed", "ignored", "failed"):
            metrics.events_by_status.labels(status).set(counts.get(status, 0))
        age_s = ingress.clock() - oldest_ms / 1000 if oldest_ms is not None else 0.0
        metrics.oldest_pending_age.set(max(age_s, 0.0))
    except STORE_ERRORS:
        log.warning("metrics.store_unavailable")
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            metrics.queue_depth.set(await queue_depth(ingress.require_redis()))
    except QUEUE_ERRORS:
        log.warning("metrics.queue_unavailable")
