"""The aiohttp ingress: verify, record durably, enqueue, answer fast.

Status codes (the contract): 200 once the event is durably recorded (`duplicate` for a known
event id); 400 with a reason for bad signatures and bodies; 413 over the size limit (from the
Content-Length alone when that is over, before any body byte is read); 405 for other methods and
404 for other paths, in JSON like every error; 503 when the order store cannot record the event,
so WooshPay retries (it retries 18 times over 72 hours, so a 503 is a delay, never a loss).
Never 500 for bad input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
import structlog
from aiohttp import HttpVersion11, hdrs, web
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.ingress.inbox_writer import InboxWriter, StoreUnavailable
from service.metrics import CONTENT_TYPE_LATEST, IngressMetrics
from service.queue import QUEUE_ERRORS, create_redis, queue_depth
from service.settings import Settings
from service.store.engine import create_engine, is_sqlite, reading
from service.store.inbox import NewEvent, inbox_summary
from service.store.outages import STORE_OUTAGE_ERRORS
from service.timeouts import BODY_TIMEOUT_S, PROBE_TIMEOUT_S
from service.wooshpay.events import InvalidEvent, WebhookEvent, parse_envelope
from service.wooshpay.signatures import SIGNATURE_HEADER, SignatureError, verify

log = structlog.get_logger("service.ingress.app")

WEBHOOK_PATH = "/webhooks/wooshpay"
# Concurrent inbox transactions on PostgreSQL (SQLite has a single writer). Fewer, larger batches
# share each commit's round trip among more events; a second one in flight keeps one slow commit
# from holding up the next batch.
POSTGRES_CONCURRENT_BATCHES = 2


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
    app.router.add_post(WEBHOOK_PATH, receive_webhook, expect_handler=expect_webhook_body)
    app.router.add_get("/healthz", healthz, expect_handler=expect_continue)
    app.router.add_get("/readyz", readyz, expect_handler=expect_continue)
    app.router.add_get("/metrics", metrics_view, expect_handler=expect_continue)
    _answer_unrouted_requests(app.router)
    return app


def _answer_unrouted_requests(router: web.UrlDispatcher) -> None:
    """Answer other methods (405) and other paths (404) in JSON, like every other error.

    Fallback routes rather than a middleware: a middleware would run on every delivery, a
    fallback only when nothing else matched. Call it once every route is added; a method added
    to a path afterwards is refused by aiohttp (the fallback would shadow it)."""
    for resource in list(router.resources()):
        assert isinstance(resource, web.Resource)  # every route here is added by path
        allowed = ",".join(sorted(route.method for route in resource))  # as aiohttp's own 405
        refuse = _method_not_allowed(allowed)
        resource.add_route(hdrs.METH_ANY, refuse, expect_handler=refuse)
    # `{path:.*}` matches every path; the router tries it only after every other resource.
    router.add_route(hdrs.METH_ANY, "/{path:.*}", _not_found, expect_handler=_not_found)


def _method_not_allowed(allowed: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def method_not_allowed(_: web.Request) -> web.Response:
        response = _json(405, {"error": "method not allowed"})
        response.headers[hdrs.ALLOW] = allowed
        return response

    return method_not_allowed


async def _not_found(_: web.Request) -> web.Response:
    return _json(404, {"error": "not found"})


def _resources(
    ingress: Ingress,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def resources(_: web.Application) -> AsyncIterator[None]:
        own_engine = ingress.engine is None
        own_redis = ingress.redis is None
        if own_engine:
            ingress.engine = create_engine(ingress.settings.database_url.reveal())
        if own_redis:
            ingress.redis = create_redis(ingress.settings.redis_url.reveal())
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
        if not request.content.is_eof():
            # Refused before its body was read: say the connection closes (RFC 9110 §10.1.1),
            # so the client sends no more of it. aiohttp reads and drops what still comes (for
            # at most 10 s), so the answer is not lost to a reset and the body is never parsed
            # as a next request.
            response.force_close()
        _log_outcome(
            "webhook.rejected", response.status, started, reason=rejected.code, **rejected.fields
        )
    ingress.metrics.request_latency.observe(time.perf_counter() - started)
    return response


async def _accept(request: web.Request, ingress: Ingress, started: float) -> web.Response:
    body = await _read_body(request, ingress.settings.max_body_bytes)
    try:
        verify(
            request.headers.get(SIGNATURE_HEADER),
            body,
            [secret.reveal() for secret in ingress.settings.webhook_secrets],
            now=ingress.clock(),
            tolerance_s=ingress.settings.tolerance_s,
        )
    except SignatureError as error:
        raise Rejected(400, str(error), error.code) from None
    try:
        event = parse_envelope(body)
    except InvalidEvent as error:
        raise Rejected(400, str(error), "invalid_event") from None
    # The event's fields go on its log line directly, not bound as structlog contextvars: the
    # request logs one line, and contextvars would be bound and cleared on every request for it.
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


async def expect_webhook_body(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` on the webhook: a body declared over the limit is answered 413 at
    once, without inviting it with `100 Continue`."""
    if _declares_too_large(request, request.app[INGRESS].settings.max_body_bytes):
        return await receive_webhook(request)
    return await expect_continue(request)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's default Expect handling, except that an unknown expectation is answered 417 in
    JSON and an HTTP/1.0 client's `100-continue` is ignored (RFC 9110 §10.1.1)."""
    expectation = request.headers.get(hdrs.EXPECT, "").lower()
    if expectation != "100-continue":
        return _json(417, {"error": "unsupported Expect header"})
    # An HTTP/1.0 client does not know 100 Continue.
    if request.version == HttpVersion11:
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim answer is not part of the response's size.
        request.writer.output_size = 0
    return None


def _declares_too_large(request: web.Request, max_body_bytes: int) -> bool:
    declared = request.content_length
    return declared is not None and declared > max_body_bytes


async def _read_body(request: web.Request, max_body_bytes: int) -> bytes:
    if _declares_too_large(request, max_body_bytes):
        # Refused from the headers: a body that cannot be accepted is never waited for.
        raise Rejected(413, "request body too large", "body_too_large")
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
    item = NewEvent(event, body, EventStatus.PENDING if event.in_scope else EventStatus.IGNORED)
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
    async with reading(engine).connect() as connection:
        await connection.execute(text("SELECT 1"))


async def _probe(check: Awaitable[object]) -> bool:
    """Whether a dependency answered. Never raises: a probe must answer 503, not 500, also
    when the failure is not an outage (a refused password, a missing database)."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            await check
    except (*STORE_OUTAGE_ERRORS, *QUEUE_ERRORS):
        return False
    except Exception as error:
        # A misconfiguration, not an outage: say so, without a traceback (the type is enough to
        # tell a refused login from a missing database, and the message may quote the URL).
        log.error("readyz.probe_failed", error=type(error).__name__)
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
        for status in EventStatus:
            metrics.events_by_status.labels(status).set(counts.get(status, 0))
        age_s = ingress.clock() - oldest_ms / 1000 if oldest_ms is not None else 0.0
        metrics.oldest_pending_age.set(max(age_s, 0.0))
    except STORE_OUTAGE_ERRORS:
        log.warning("metrics.store_unavailable")
    except Exception as error:
        # Not an outage (a refused login, a missing schema): the scrape still answers.
        log.error("metrics.store_failed", error=type(error).__name__)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            metrics.queue_depth.set(await queue_depth(ingress.require_redis()))
    except QUEUE_ERRORS:
        log.warning("metrics.queue_unavailable")
