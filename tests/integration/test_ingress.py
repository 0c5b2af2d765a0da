"""Integration tests of the webhook ingress (README, docs/wooshpay.md) on real stores and Redis.

Every test drives `service.ingress.app.create_app` through aiohttp's TestServer/TestClient. Tests
that
touch the order store run once on SQLite and once on PostgreSQL (the `engine`/`settings`
fixtures); each test has its own arq queue, so `zcard(queue_name)` counts only its own jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from arq.connections import ArqRedis
from arq.jobs import Job
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, start_local_redis
from service.devtools.sender import encode_event
from service.ingress.app import create_app
from service.queue import RECONCILE_FUNCTION, create_redis, deserialize_job, job_id_for
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.wooshpay.signatures import compute_signature, sign_header
from tests.support.webhooks import (
    SECRET,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
    Client,
    Delivery,
    delivery,
    event_dict,
    get_json,
    inbox_rows,
    metric_value,
    open_client,
    post,
    queued_job_ids,
    scrape,
    send,
    signed_headers,
)

DAY_S = 24 * 60 * 60


def assert_accepted(status: int, answer: Any, event_id: str, *, duplicate: bool) -> None:
    assert status == 200, answer
    assert answer == {"received": True, "event_id": event_id, "duplicate": duplicate}


# --- accepted deliveries ------------------------------------------------------------------------


@pytest.mark.parametrize("created_unit", ["milliseconds", "seconds"])
async def test_accepted_event_is_recorded_and_enqueued_once(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, created_unit: str
) -> None:
    """An in-scope event is answered 200, recorded pending byte-for-byte (created in ms) and
    enqueued as exactly one arq job `evt:<event_id>` carrying only the event id."""
    event = event_dict("payment_intent.succeeded")
    created = int(time.time()) if created_unit == "seconds" else event["created"]
    event["created"] = created
    event["data"]["object"]["description"] = "Bestellung für Jürgen: 20 € ✓"
    # Pretty-printed, non-ASCII, trailing newline: the stored body must be these exact bytes.
    body = json.dumps(event, indent=2, ensure_ascii=False).encode() + b"\n"

    before_ms = int(time.time() * 1000)
    status, answer = await post(client, body, signed_headers(body))
    after_ms = int(time.time() * 1000)

    assert_accepted(status, answer, event["id"], duplicate=False)
    rows = await inbox_rows(engine)
    assert len(rows) == 1
    row = rows[0]
    assert row["event_id"] == event["id"]
    assert row["type"] == "payment_intent.succeeded"
    assert row["status"] == "pending"
    assert row["attempts"] == 0
    assert bytes(row["body"]) == body
    assert row["created_ms"] == (created * 1000 if created_unit == "seconds" else created)
    assert await redis.zcard(queue_name) == 1
    assert await queued_job_ids(redis, queue_name) == [f"evt:{event['id']}"]
    info = await Job(
        job_id_for(event["id"]), redis, _queue_name=queue_name, _deserializer=deserialize_job
    ).info()
    assert info is not None
    assert info.function == RECONCILE_FUNCTION
    assert tuple(info.args) == (event["id"],)
    # Runnable at once: scored with the enqueue time, not deferred.
    score = await redis.zscore(queue_name, job_id_for(event["id"]))
    assert score is not None
    assert before_ms <= score <= after_ms


async def test_out_of_scope_event_is_recorded_ignored_without_job(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """An event type outside the reconciled set is acknowledged 200, recorded `ignored` and never
    enqueued; its redelivery is a duplicate."""
    event = {
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": "1.0.1",
        "created": int(time.time() * 1000),
        "livemode": False,
        "type": "customer.created",
        "data": {"object": {"id": "cus_123", "object": "customer", "email": "a@example.com"}},
    }
    sent = delivery(event)

    assert_accepted(*await send(client, sent), sent.event_id, duplicate=False)
    assert_accepted(*await send(client, delivery(event)), sent.event_id, duplicate=True)

    rows = await inbox_rows(engine)
    assert [(r["event_id"], r["type"], r["status"]) for r in rows] == [
        (sent.event_id, "customer.created", "ignored")
    ]
    assert await redis.zcard(queue_name) == 0


async def test_redelivery_is_a_duplicate(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """A redelivered event (signed afresh, later t) is answered 200 duplicate with still one row
    and one job."""
    event = event_dict("payment_intent.processing")
    now = int(time.time())
    first = delivery(event, timestamp=now - 60)
    again = delivery(event, timestamp=now)
    assert first.headers[SIGNATURE_HEADER] != again.headers[SIGNATURE_HEADER]

    assert_accepted(*await send(client, first), first.event_id, duplicate=False)
    assert_accepted(*await send(client, again), first.event_id, duplicate=True)
    assert_accepted(*await send(client, again), first.event_id, duplicate=True)

    rows = await inbox_rows(engine)
    assert [(r["event_id"], r["status"]) for r in rows] == [(first.event_id, "pending")]
    assert bytes(rows[0]["body"]) == first.body
    assert await queued_job_ids(redis, queue_name) == [job_id_for(first.event_id)]


async def test_concurrent_deliveries_record_and_enqueue_once(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """The same signed event posted 20 times at once yields one row, one job, twenty 200s and
    exactly one non-duplicate answer."""
    sent = delivery(event_dict("checkout.session.completed"))

    answers = await asyncio.gather(*(send(client, sent) for _ in range(20)))

    assert [status for status, _ in answers] == [200] * 20
    assert all(a["received"] is True and a["event_id"] == sent.event_id for _, a in answers)
    assert sorted(a["duplicate"] for _, a in answers) == [False] + [True] * 19
    rows = await inbox_rows(engine)
    assert [(r["event_id"], r["status"]) for r in rows] == [(sent.event_id, "pending")]
    assert await queued_job_ids(redis, queue_name) == [job_id_for(sent.event_id)]


async def test_concurrent_distinct_events_each_get_a_row_and_in_scope_ones_a_job(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """Distinct events posted at once are each recorded as new; in-scope ones get one job each,
    out-of-scope ones none."""
    in_scope = [delivery(event_dict(t)) for t in ("payment_intent.created",) * 10]
    ignored_events = [event_dict() for _ in range(5)]
    for event in ignored_events:
        event["type"] = "invoice.paid"
    ignored = [delivery(event) for event in ignored_events]
    deliveries = in_scope + ignored

    answers = await asyncio.gather(*(send(client, sent) for sent in deliveries))

    for sent, (status, answer) in zip(deliveries, answers, strict=True):
        assert_accepted(status, answer, sent.event_id, duplicate=False)
    statuses = {r["event_id"]: r["status"] for r in await inbox_rows(engine)}
    assert statuses == {
        **{sent.event_id: "pending" for sent in in_scope},
        **{sent.event_id: "ignored" for sent in ignored},
    }
    assert sorted(await queued_job_ids(redis, queue_name)) == sorted(
        job_id_for(sent.event_id) for sent in in_scope
    )


def _rotated(body: bytes, now: int) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_header(body, "whsec_new_rotated", timestamp=now)}


def _one_of_many(body: bytes, now: int) -> dict[str, str]:
    wrong = compute_signature(body, "whsec_someone_else", str(now))
    right = compute_signature(body, SECRET, str(now))
    return {SIGNATURE_HEADER: f"t={now},v1={wrong},v1={right}"}


def _unknown_elements(body: bytes, now: int) -> dict[str, str]:
    right = compute_signature(body, SECRET, str(now))
    return {SIGNATURE_HEADER: f"foo=bar, t={now} ,v0={'0' * 64},v1={right.upper()},"}


def _milliseconds_t(body: bytes, now: int) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_header(body, SECRET, timestamp=now * 1000 + 123)}


def _within_tolerance(body: bytes, now: int) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign_header(body, SECRET, timestamp=now - 240)}


@pytest.mark.parametrize(
    "sign",
    [_rotated, _one_of_many, _unknown_elements, _milliseconds_t, _within_tolerance],
    ids=["rotated-second-secret", "one-v1-of-many", "unknown-elements", "t-in-ms", "t-4-min-old"],
)
async def test_valid_signature_variants_are_accepted(
    settings: Settings,
    engine: AsyncEngine,
    redis: ArqRedis,
    queue_name: str,
    sign: Callable[[bytes, int], dict[str, str]],
) -> None:
    """Any v1 matching any configured secret within the tolerance is accepted (rotation, extra v1
    and unknown elements, upper-case hex, t in ms), even for an event created days before t."""
    rotated = dataclasses.replace(
        settings, webhook_secrets=(Secret(SECRET), Secret("whsec_new_rotated"))
    )
    client = await open_client(create_app(rotated, engine=engine, redis=redis))
    try:
        # The event was created three days ago: every redelivery is signed afresh, never too old.
        event = event_dict(now_ms=int((time.time() - 3 * DAY_S) * 1000))
        body = encode_event(event)
        status, answer = await post(client, body, sign(body, int(time.time())))
    finally:
        await client.close()

    assert_accepted(status, answer, event["id"], duplicate=False)
    assert [r["event_id"] for r in await inbox_rows(engine)] == [event["id"]]
    assert await queued_job_ids(redis, queue_name) == [job_id_for(event["id"])]


# --- rejected deliveries ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bad:
    """A bad request: how to build it, the rejection code and a fragment of the error text."""

    name: str
    build: Callable[[], tuple[bytes, dict[str, str]]]
    code: str
    error: str


def _valid_body() -> bytes:
    return encode_event(event_dict())


def _signed(
    body: bytes, *, secret: str = SECRET, skew_s: int = 0, in_ms: bool = False
) -> Callable[[], tuple[bytes, dict[str, str]]]:
    """Sign `body` when the request is built, `skew_s` away from the clock."""

    def build() -> tuple[bytes, dict[str, str]]:
        signed_at = int(time.time()) + skew_s
        return body, signed_headers(
            body, secret, timestamp=signed_at * 1000 if in_ms else signed_at
        )

    return build


def _header(value: Callable[[bytes, int], str]) -> Callable[[], tuple[bytes, dict[str, str]]]:
    def build() -> tuple[bytes, dict[str, str]]:
        body = _valid_body()
        return body, {SIGNATURE_HEADER: value(body, int(time.time()))}

    return build


def _event_with(
    change: Callable[[dict[str, Any]], None],
) -> Callable[[], tuple[bytes, dict[str, str]]]:
    def build() -> tuple[bytes, dict[str, str]]:
        event = event_dict()
        change(event)
        body = encode_event(event)
        return body, signed_headers(body)

    return build


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, leaf = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for key in parents:
            target = target[key]
        target[leaf] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, leaf = path.split(".")

    def change(event: dict[str, Any]) -> None:
        target = event
        for key in parents:
            target = target[key]
        del target[leaf]

    return change


def _no_header() -> tuple[bytes, dict[str, str]]:
    return _valid_body(), {"Content-Type": "application/json"}


def _tampered() -> tuple[bytes, dict[str, str]]:
    event = event_dict()
    body = encode_event(event)
    headers = signed_headers(body)
    event["data"]["object"]["amount"] += 1
    return encode_event(event), headers


def _latin1() -> tuple[bytes, dict[str, str]]:
    body = encode_event(event_dict()).replace(b'"order-1"', b'"order-\xe9"')
    return body, signed_headers(body)


def _utf16() -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event_dict()).encode("utf-16-le")
    return body, signed_headers(body)


def _sig(body: bytes, now: int) -> str:
    return compute_signature(body, SECRET, str(now))


SIG_MISMATCH = "signature_mismatch"
MALFORMED = "malformed_signature"
STALE = "timestamp_outside_tolerance"
INVALID = "invalid_event"
BAD_REQUESTS = [
    Bad("missing-header", _no_header, "missing_signature", "missing"),
    Bad("blank-header", _header(lambda b, n: " "), "missing_signature", "missing"),
    Bad("malformed-garbage", _header(lambda b, n: "garbage"), MALFORMED, "timestamp"),
    Bad("malformed-t", _header(lambda b, n: f"t=soon,v1={_sig(b, n)}"), MALFORMED, "timestamp"),
    Bad("malformed-no-v1", _header(lambda b, n: f"t={n}"), MALFORMED, "v1"),
    Bad("malformed-v1", _header(lambda b, n: f"t={n},v1=deadbeef"), MALFORMED, "v1"),
    Bad("malformed-two-t", _header(lambda b, n: f"t={n},t={n},v1={_sig(b, n)}"), MALFORMED, "t"),
    Bad("malformed-huge", _header(lambda b, n: f"t={n},v1={'a' * 64}" * 80), MALFORMED, "long"),
    Bad("wrong-secret", _signed(_valid_body(), secret="whsec_wrong"), SIG_MISMATCH, "signature"),
    Bad("tampered-body", _tampered, SIG_MISMATCH, "signature"),
    Bad("t-not-signed", _header(lambda b, n: f"t={n},v1={_sig(b, n - 1)}"), SIG_MISMATCH, "sign"),
    Bad("stale-t", _signed(_valid_body(), skew_s=-420), STALE, "tolerance"),
    Bad("future-t", _signed(_valid_body(), skew_s=420), STALE, "tolerance"),
    Bad("stale-t-ms", _signed(_valid_body(), skew_s=-420, in_ms=True), STALE, "tolerance"),
    Bad("not-json", _signed(b"not json at all"), INVALID, "JSON"),
    Bad("empty-body", _signed(b""), INVALID, "JSON"),
    Bad("truncated-json", _signed(b'{"id": "evt_1", "type":'), INVALID, "JSON"),
    Bad("deeply-nested", _signed(b"[" * 100_000), INVALID, "JSON"),
    Bad("json-array", _signed(b"[]"), INVALID, "object"),
    Bad("json-string", _signed(b'"evt_1"'), INVALID, "object"),
    Bad("json-null", _signed(b"null"), INVALID, "object"),
    Bad("json-number", _signed(b"42"), INVALID, "object"),
    Bad("missing-id", _event_with(_drop("id")), INVALID, "'id'"),
    Bad("empty-id", _event_with(_set("id", "")), INVALID, "'id'"),
    Bad("numeric-id", _event_with(_set("id", 12345)), INVALID, "'id'"),
    Bad("overlong-id", _event_with(_set("id", "evt_" + "x" * 300)), INVALID, "'id'"),
    Bad("control-char-id", _event_with(_set("id", "evt_1\n2")), INVALID, "'id'"),
    Bad("missing-type", _event_with(_drop("type")), INVALID, "'type'"),
    Bad("null-type", _event_with(_set("type", None)), INVALID, "'type'"),
    Bad("missing-created", _event_with(_drop("created")), INVALID, "'created'"),
    Bad("created-string", _event_with(_set("created", "1754477408123")), INVALID, "'created'"),
    Bad("created-bool", _event_with(_set("created", True)), INVALID, "'created'"),
    Bad("created-float", _event_with(_set("created", 1754477408.5)), INVALID, "'created'"),
    Bad("created-zero", _event_with(_set("created", 0)), INVALID, "'created'"),
    Bad("created-negative", _event_with(_set("created", -5)), INVALID, "'created'"),
    Bad("created-huge", _event_with(_set("created", 2**63)), INVALID, "'created'"),
    Bad("missing-data", _event_with(_drop("data")), INVALID, "'data.object'"),
    Bad("missing-data-object", _event_with(_drop("data.object")), INVALID, "'data.object'"),
    Bad("data-object-list", _event_with(_set("data.object", [])), INVALID, "'data.object'"),
    Bad("data-not-object", _event_with(_set("data", "x")), INVALID, "'data.object'"),
    Bad("non-utf8-latin1", _latin1, INVALID, "JSON"),
    Bad("non-utf8-utf16", _utf16, INVALID, "JSON"),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[bad.name for bad in BAD_REQUESTS])
async def test_bad_request_is_rejected_400_and_leaves_no_trace(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, bad: Bad
) -> None:
    """Bad signatures and bodies are answered 400 with a reason, counted under their rejection
    code, and record no row and enqueue no job."""
    body, headers = bad.build()

    async with client.post(WEBHOOK_PATH, data=body, headers=headers) as response:
        status = response.status
        content_type = response.content_type
        answer = await response.json()

    assert status == 400, answer
    assert content_type == "application/json"
    assert set(answer) == {"error"}
    assert isinstance(answer["error"], str)
    assert bad.error.lower() in answer["error"].lower()
    samples = await scrape(client)
    assert metric_value(samples, "wooshpay_webhooks_rejected_total", reason=bad.code) == 1
    assert await inbox_rows(engine) == []
    assert await redis.zcard(queue_name) == 0


# --- size and method ----------------------------------------------------------------------------


def _padded_delivery(size: int) -> Delivery:
    """A valid signed event whose encoded body is exactly `size` bytes."""
    event = event_dict()
    event["data"]["object"]["description"] = ""
    padding = size - len(encode_event(event))
    assert padding >= 0
    event["data"]["object"]["description"] = "x" * padding
    sent = delivery(event)
    assert len(sent.body) == size
    return sent


async def test_body_over_limit_is_413_and_not_recorded(
    client: Client, settings: Settings, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """A signed body one byte over the limit (1 MiB) is answered 413 and records nothing."""
    assert settings.max_body_bytes == 1024 * 1024
    sent = _padded_delivery(settings.max_body_bytes + 1)

    # A file-like body: aiohttp warns that sending over 1 MiB of raw bytes blocks the loop.
    data = io.BytesIO(sent.body)
    async with client.post(WEBHOOK_PATH, data=data, headers=sent.headers) as response:
        status = response.status
        answer = await response.json()

    assert status == 413
    assert set(answer) == {"error"}
    assert await inbox_rows(engine) == []
    assert await redis.zcard(queue_name) == 0


async def test_body_at_limit_is_accepted(
    client: Client, settings: Settings, engine: AsyncEngine, redis: ArqRedis, queue_name: str
) -> None:
    """A signed event of exactly the limit (1 MiB) is not over it, so it is accepted."""
    sent = _padded_delivery(settings.max_body_bytes)

    assert_accepted(*await send(client, sent), sent.event_id, duplicate=False)
    rows = await inbox_rows(engine)
    assert [bytes(r["body"]) for r in rows] == [sent.body]
    assert await redis.zcard(queue_name) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_are_405(
    client: Client, engine: AsyncEngine, redis: ArqRedis, queue_name: str, method: str
) -> None:
    """The webhook path answers 405 to anything but POST, even with a signed event."""
    sent = delivery()

    async with client.request(method, WEBHOOK_PATH, data=sent.body, headers=sent.headers) as resp:
        assert resp.status == 405
        assert "POST" in resp.headers.get("Allow", "")

    assert await inbox_rows(engine) == []
    assert await redis.zcard(queue_name) == 0


# --- Redis down ---------------------------------------------------------------------------------


@pytest.fixture
def private_redis() -> Iterator[LocalRedis]:
    """A private redis-server (never the shared one), stopped at teardown."""
    server = start_local_redis()
    yield server
    server.stop()


@pytest_asyncio.fixture
async def dead_redis(private_redis: LocalRedis, queue_name: str) -> AsyncIterator[ArqRedis]:
    """An arq pool that held a live connection to a Redis that has since been stopped."""
    pool = create_redis(private_redis.url, queue_name=queue_name)
    assert await pool.ping()
    private_redis.stop()
    yield pool
    await pool.aclose(close_connection_pool=True)


async def test_redis_down_still_accepts_and_records(
    settings: Settings, engine: AsyncEngine, dead_redis: ArqRedis
) -> None:
    """With Redis gone the event is still answered 200 and recorded `pending` for the sweeper,
    and /readyz stays 200 reporting Redis unavailable and the database ok."""
    client = await open_client(create_app(settings, engine=engine, redis=dead_redis))
    try:
        sent = delivery()
        first = await send(client, sent)
        again = await send(client, delivery(json.loads(sent.body)))
        ready = await get_json(client, "/readyz")
        samples = await scrape(client)
    finally:
        await client.close()

    assert_accepted(*first, sent.event_id, duplicate=False)
    assert_accepted(*again, sent.event_id, duplicate=True)
    rows = await inbox_rows(engine)
    assert [(r["event_id"], r["status"]) for r in rows] == [(sent.event_id, "pending")]
    status, body = ready
    assert status == 200
    assert body["redis"] == "unavailable"
    assert body["database"] == "ok"
    assert metric_value(samples, "wooshpay_webhooks_enqueue_deferred_total") == 1


# --- database unreachable -----------------------------------------------------------------------


@pytest.fixture(params=["postgres-closed-port", "sqlite-missing-directory"])
def unreachable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres-closed-port":
        return "postgresql://postgres@127.0.0.1:1/nothing"
    return f"sqlite:///{tmp_path / 'no' / 'such' / 'directory' / 'orders.db'}"


async def test_unreachable_store_answers_503_and_enqueues_nothing(
    unreachable_store_url: str, redis_url: str, redis: ArqRedis, queue_name: str, tmp_path: Path
) -> None:
    """When the order store cannot record the event the answer is 503 with an error (so WooshPay
    retries), no job is enqueued, and /readyz is 503 with the database unavailable."""
    settings = Settings(
        webhook_secrets=(Secret(SECRET),),
        redis_url=SecretUrl(redis_url),
        database_url=SecretUrl(unreachable_store_url),
    )
    # The app opens (and closes) its own engine on the unreachable URL.
    client = await open_client(create_app(settings, redis=redis))
    try:
        sent = delivery()
        status, answer = await send(client, sent)
        again_status, _ = await send(client, sent)
        ready_status, ready = await get_json(client, "/readyz")
        async with client.get("/healthz") as health:
            health_status = health.status
    finally:
        await client.close()

    assert status == 503
    assert set(answer) == {"error"}
    assert answer["error"]
    assert again_status == 503
    assert await redis.zcard(queue_name) == 0
    assert await redis.exists(f"arq:job:{job_id_for(sent.event_id)}") == 0
    assert ready_status == 503
    assert ready["database"] == "unavailable"
    assert ready["redis"] == "ok"
    assert health_status == 200
    assert not (tmp_path / "no").exists()


# --- probes -------------------------------------------------------------------------------------


async def test_healthz_is_200(client: Client) -> None:
    """/healthz answers 200 while the process runs."""
    status, _ = await get_json(client, "/healthz")
    assert status == 200


async def test_readyz_reports_both_stores_ok(client: Client) -> None:
    """/readyz is 200 and reports the database and Redis ok when both answer."""
    status, body = await get_json(client, "/readyz")
    assert status == 200
    assert body["database"] == "ok"
    assert body["redis"] == "ok"
