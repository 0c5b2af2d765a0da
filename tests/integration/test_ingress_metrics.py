"""Integration tests of the ingress's observability (README): Prometheus metrics and
structured logs, on SQLite and PostgreSQL, with real Redis.

Logs are captured with `structlog.testing.capture_logs`, with `merge_contextvars` (which binds
`event_id`/`event_type` per request in production) and the production redaction processor.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from structlog.typing import EventDict

from service.ingress import app as http
from service.ingress import inbox_writer
from service.ingress.app import create_app
from service.logs import redact
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from tests.support.webhooks import (
    SECRET,
    SIGNATURE_HEADER,
    WEBHOOK_PATH,
    Client,
    Delivery,
    delivery,
    event_dict,
    metric_value,
    open_client,
    post,
    scrape,
    send,
    signed_headers,
)

WRONG_SECRET = "whsec_not_the_endpoint_secret"
BAD_JSON = b'{"id": "evt_not_json", "type": "payment_intent.succeeded", "created": '


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[EventDict]]:
    """Every structlog entry the ingress emits during the test."""
    # Fresh lazy loggers: one cached by an earlier configure_logging() would bypass the capture.
    monkeypatch.setattr(http, "log", structlog.get_logger("service.ingress.app"))
    monkeypatch.setattr(inbox_writer, "log", structlog.get_logger("service.ingress.inbox_writer"))
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars, redact]
    ) as entries:
        yield entries


def bad_json_delivery() -> Delivery:
    return Delivery("", BAD_JSON, signed_headers(BAD_JSON))


async def small_run(client: Client) -> tuple[Delivery, Delivery, list[Delivery]]:
    """2 accepted, 1 duplicate, 1 wrong secret, 1 bad JSON; returns what was sent."""
    first = delivery(event_dict("payment_intent.succeeded"))
    second = delivery(event_dict("checkout.session.completed"))
    forged = delivery(event_dict("payment_intent.succeeded"), secret=WRONG_SECRET)
    broken = bad_json_delivery()
    sent = [first, second, first, forged, broken]
    answers = [await send(client, item) for item in sent]
    assert [status for status, _ in answers] == [200, 200, 200, 400, 400]
    assert [answer.get("duplicate") for _, answer in answers[:3]] == [False, False, True]
    return first, second, sent


async def test_metrics_count_a_small_run(client: Client) -> None:
    """/metrics counts received, accepted by type, duplicate and rejected-by-reason requests,
    observes every request's duration, and reports inbox statuses and queue depth."""
    await small_run(client)

    async with client.get("/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
    samples = await scrape(client)

    def value(name: str, **labels: str) -> float | None:
        return metric_value(samples, name, **labels)

    assert value("wooshpay_webhooks_received_total") == 5
    assert value("wooshpay_webhooks_accepted_total", event_type="payment_intent.succeeded") == 1
    assert value("wooshpay_webhooks_accepted_total", event_type="checkout.session.completed") == 1
    accepted = [v for (name, _), v in samples.items() if name == "wooshpay_webhooks_accepted_total"]
    assert sum(accepted) == 2
    assert value("wooshpay_webhooks_duplicate_total") == 1
    assert value("wooshpay_webhooks_rejected_total", reason="signature_mismatch") == 1
    assert value("wooshpay_webhooks_rejected_total", reason="invalid_event") == 1
    rejected = [v for (name, _), v in samples.items() if name == "wooshpay_webhooks_rejected_total"]
    assert sum(rejected) == 2
    assert value("wooshpay_webhook_request_duration_seconds_count") == 5
    assert value("wooshpay_webhook_request_duration_seconds_bucket", le="+Inf") == 5
    duration_sum = value("wooshpay_webhook_request_duration_seconds_sum")
    assert duration_sum is not None
    assert duration_sum > 0
    assert value("wooshpay_events", status="pending") == 2
    assert value("wooshpay_events", status="ignored") == 0
    assert value("wooshpay_events", status="failed") == 0
    assert value("wooshpay_queue_depth") == 2
    assert value("wooshpay_webhooks_enqueue_deferred_total") == 0
    oldest = value("wooshpay_oldest_pending_event_age_seconds")
    assert oldest is not None
    assert 0 <= oldest < 60


async def test_out_of_scope_types_are_labelled_other(client: Client) -> None:
    """Accepted events of types outside the reconciled set share the `other` label, so arbitrary
    type strings cannot blow up label cardinality; they are counted as ignored, not queued."""
    for event_type in ("customer.created", "invoice.paid"):
        event = event_dict()
        event["type"] = event_type
        status, _ = await send(client, delivery(event))
        assert status == 200

    samples = await scrape(client)

    labels = {
        dict(key)["event_type"]
        for (name, key) in samples
        if name == "wooshpay_webhooks_accepted_total"
    }
    assert labels == {"other"}
    assert metric_value(samples, "wooshpay_webhooks_accepted_total", event_type="other") == 2
    assert metric_value(samples, "wooshpay_events", status="ignored") == 2
    assert metric_value(samples, "wooshpay_events", status="pending") == 0
    assert metric_value(samples, "wooshpay_queue_depth") == 0


def assert_nothing_secret(entries: list[EventDict], sent: list[Delivery], *extra: str) -> None:
    """No captured entry contains a secret, a signature header (or its v1), or a raw body."""
    dump = "\n".join(json.dumps(entry, default=repr, ensure_ascii=False) for entry in entries)
    dump += "\n".join(repr(entry) for entry in entries)
    forbidden = [SECRET, WRONG_SECRET, *extra]
    for item in sent:
        header = item.headers.get(SIGNATURE_HEADER)
        if header is not None:
            forbidden.append(header)
            forbidden += [part.split("=", 1)[1] for part in header.split(",") if "v1=" in part]
        forbidden.append(item.body.decode("utf-8", errors="replace"))
    for value in forbidden:
        assert value not in dump, f"log entries leak {value[:40]!r}"


async def test_logs_one_line_per_request_without_secrets(
    client: Client, logs: list[EventDict]
) -> None:
    """Each accepted request logs one `webhook.accepted` line (event_id, event_type, status 200,
    duration_ms), each rejected one `webhook.rejected` with its reason, and no entry holds the
    secret, a signature header or a raw body."""
    first, second, sent = await small_run(client)
    missing = Delivery("", first.body, {"Content-Type": "application/json"})
    assert (await send(client, missing))[0] == 400

    accepted = [e for e in logs if e["event"] == "webhook.accepted"]
    assert sorted((e["event_id"], e["event_type"]) for e in accepted) == sorted(
        [
            (first.event_id, "payment_intent.succeeded"),
            (second.event_id, "checkout.session.completed"),
        ]
    )
    for entry in accepted:
        assert entry["status"] == 200
        assert entry["log_level"] == "info"
        assert isinstance(entry["duration_ms"], int | float)
        assert 0 <= entry["duration_ms"] < 60_000
    duplicates = [e for e in logs if e["event"] == "webhook.duplicate"]
    assert [(e["event_id"], e["status"]) for e in duplicates] == [(first.event_id, 200)]
    rejected = [e for e in logs if e["event"] == "webhook.rejected"]
    assert [(e["reason"], e["status"]) for e in rejected] == [
        ("signature_mismatch", 400),
        ("invalid_event", 400),
        ("missing_signature", 400),
    ]
    assert all("duration_ms" in e for e in rejected)
    # A rejected request is never attributed to an event (no event_id from another request).
    assert all("event_id" not in e for e in rejected)
    # Distinctive payload values (not ids) stay out of the logs too.
    client_secret = json.loads(first.body)["data"]["object"]["client_secret"]
    assert_nothing_secret(logs, [*sent, missing], client_secret)


async def test_store_failure_logs_no_payload(
    client: Client, engine: AsyncEngine, logs: list[EventDict]
) -> None:
    """When the inbox insert fails the answer is 503, logged as `webhook.rejected` with reason
    store_unavailable, and the failing statement's parameters (the body) reach no log entry."""
    sent = delivery(event_dict("payment_intent.succeeded"))
    async with engine.begin() as connection:
        await connection.execute(text("ALTER TABLE events RENAME TO events_moved_away"))
    try:
        status, answer = await send(client, sent)
    finally:
        async with engine.begin() as connection:
            await connection.execute(text("ALTER TABLE events_moved_away RENAME TO events"))

    assert status == 503
    assert set(answer) == {"error"}
    rejected = [e for e in logs if e["event"] == "webhook.rejected"]
    assert [(e["reason"], e["status"], e["event_id"]) for e in rejected] == [
        ("store_unavailable", 503, sent.event_id)
    ]
    client_secret = json.loads(sent.body)["data"]["object"]["client_secret"]
    assert_nothing_secret(logs, [sent], client_secret)
    # Only after the table is back does the redelivery get recorded.
    status, answer = await send(client, sent)
    assert (status, answer["duplicate"]) == (200, False)


async def test_request_duration_histogram_counts_413_and_store_errors(
    redis_url: str, redis: ArqRedis, tmp_path: Path
) -> None:
    """Requests refused for size or an unreachable store are still counted as received and
    rejected by reason, and their durations observed."""
    unreachable = Settings(
        webhook_secrets=(Secret(SECRET),),
        redis_url=SecretUrl(redis_url),
        database_url=SecretUrl(f"sqlite:///{tmp_path / 'missing' / 'orders.db'}"),
        max_body_bytes=2048,
    )
    client = await open_client(create_app(unreachable, redis=redis))
    try:
        big = b"x" * 4096
        async with client.post(WEBHOOK_PATH, data=big, headers=signed_headers(big)) as response:
            assert response.status == 413
        sent = delivery()
        status, _ = await post(client, sent.body, sent.headers)
        assert status == 503
        samples = await scrape(client)
    finally:
        await client.close()

    assert metric_value(samples, "wooshpay_webhooks_received_total") == 2
    assert metric_value(samples, "wooshpay_webhooks_rejected_total", reason="body_too_large") == 1
    assert (
        metric_value(samples, "wooshpay_webhooks_rejected_total", reason="store_unavailable") == 1
    )
    assert metric_value(samples, "wooshpay_webhook_request_duration_seconds_count") == 2
