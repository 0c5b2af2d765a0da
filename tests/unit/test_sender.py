"""Unit tests for service.devtools.sender: realistic event building, encoding, signing and
posting."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from service.devtools.sender import (
    SUPPORTED_TYPES,
    EventOptions,
    SendResult,
    build_event,
    encode_event,
    post_event,
)
from service.domain.events import IN_SCOPE_TYPES
from service.domain.orders import OrderTerms, project
from service.wooshpay import events
from service.wooshpay.signatures import TIMESTAMP_OUTSIDE_TOLERANCE, SignatureError, verify

NOW_MS = 1_754_477_408_123
DAY_MS = 24 * 60 * 60 * 1000
SECRET = "whsec_test_sender_secret"
PAYMENT_INTENT_TYPES = [t for t in SUPPORTED_TYPES if t.startswith("payment_intent.")]
CHECKOUT_TYPES = [t for t in SUPPORTED_TYPES if t.startswith("checkout.session.")]
ORDER_CARRYING_TYPES = PAYMENT_INTENT_TYPES + CHECKOUT_TYPES
PREFIX_BY_FAMILY = {"payment_intent": "pi_", "checkout": "cs_", "charge": "re_"}


def _object(event: dict[str, Any]) -> dict[str, Any]:
    obj = event["data"]["object"]
    assert isinstance(obj, dict)
    return obj


def _build(event_type: str, **options: Any) -> dict[str, Any]:
    return build_event(event_type, EventOptions(**options), now_ms=NOW_MS)


def test_supported_types_are_exactly_the_in_scope_types() -> None:
    """The sender covers the nine event types the service reconciles, no more and no fewer."""
    assert len(SUPPORTED_TYPES) == 9
    assert set(SUPPORTED_TYPES) == IN_SCOPE_TYPES


@pytest.mark.parametrize("event_type", SUPPORTED_TYPES)
def test_envelope_has_required_fields(event_type: str) -> None:
    """Every supported type builds a WooshPay envelope with id, type, ms created and data.object."""
    event = _build(event_type, order_id="order-1")

    assert event["id"].startswith("evt_")
    assert len(event["id"]) > len("evt_")
    assert event["object"] == "event"
    assert event["type"] == event_type
    assert event["created"] == NOW_MS
    assert event["created"] > 10**12
    assert event["livemode"] is False
    assert event["api_version"] == "1.0.1"
    assert set(event["request"]) == {"id", "idempotency_key"}
    assert isinstance(event["data"]["object"], dict)


@pytest.mark.parametrize("event_type", SUPPORTED_TYPES)
def test_object_id_prefix_and_upper_case_currency(event_type: str) -> None:
    """The data object's id has its type's prefix and its currency is upper-case."""
    obj = _object(_build(event_type, order_id="order-1", currency="eur"))

    prefix = PREFIX_BY_FAMILY[event_type.split(".")[0]]
    assert obj["id"].startswith(prefix)
    assert obj["currency"] == "EUR"
    assert obj["created"] > 10**12


@pytest.mark.parametrize("event_type", SUPPORTED_TYPES)
def test_every_event_parses_in_the_service(event_type: str) -> None:
    """An encoded event passes the ingress envelope check and the worker's object parser."""
    body = encode_event(_build(event_type, order_id="order-7", amount=1234, refund_amount=234))

    parsed = events.parse_payment_event(events.parse_envelope(body))

    assert parsed.type == event_type
    assert parsed.created_ms == NOW_MS
    assert parsed.object.currency == "EUR"


@pytest.mark.parametrize("event_type", ORDER_CARRYING_TYPES)
def test_order_id_is_carried(event_type: str) -> None:
    """Payment intents and checkout sessions name the order the way the linker looks it up."""
    obj = _object(_build(event_type, order_id="order-42"))

    assert obj["metadata"] == {"order_id": "order-42"}
    key = "merchant_order_id" if event_type in PAYMENT_INTENT_TYPES else "client_reference_id"
    assert obj[key] == "order-42"


@pytest.mark.parametrize("event_type", ORDER_CARRYING_TYPES)
def test_without_order_id_no_order_is_named(event_type: str) -> None:
    """Without an order id the object names no order rather than an empty or made-up one."""
    obj = _object(_build(event_type))

    assert obj["metadata"] == {}
    assert obj.get("merchant_order_id") is None
    assert obj.get("client_reference_id") is None


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("payment_intent.created", "requires_payment_method"),
        ("payment_intent.requires_action", "requires_action"),
        ("payment_intent.processing", "processing"),
        ("payment_intent.succeeded", "succeeded"),
        ("payment_intent.payment_failed", "requires_payment_method"),
        ("payment_intent.canceled", "canceled"),
    ],
)
def test_payment_intent_status_matches_event(event_type: str, status: str) -> None:
    """Each payment_intent event carries a SOFORT PaymentIntent in the matching status."""
    obj = _object(_build(event_type, order_id="order-1", amount=4999))

    assert obj["object"] == "payment_intent"
    assert obj["status"] == status
    assert obj["amount"] == 4999
    assert obj["payment_method_types"] == ["sofort"]
    assert obj["payment_method_data"]["type"] == "sofort"
    assert obj["payment_method_data"]["billing_details"]["address"]["country"] == "DE"
    assert obj["capture_method"] == "automatic"
    assert obj["confirmation_method"] == "automatic"
    assert obj["return_url"].startswith("https://")


@pytest.mark.parametrize("event_type", PAYMENT_INTENT_TYPES)
def test_amount_received_only_on_success(event_type: str) -> None:
    """amount_received equals amount on succeeded and is null before the money arrives."""
    obj = _object(_build(event_type, order_id="order-1", amount=4999))

    expected = 4999 if event_type == "payment_intent.succeeded" else None
    assert obj["amount_received"] == expected


def test_requires_action_has_sofort_redirect() -> None:
    """requires_action carries WooshPay's SOFORT redirect next_action."""
    obj = _object(_build("payment_intent.requires_action", order_id="order-1"))

    assert obj["next_action"]["type"] == "redirect_to_url"
    assert obj["next_action"]["sofort_handle_redirect"]["url"].startswith("https://r3.girogate.de/")


def test_payment_failed_and_canceled_say_why() -> None:
    """A failed payment has last_payment_error and a canceled one a cancellation_reason."""
    failed = _object(_build("payment_intent.payment_failed", order_id="order-1"))
    canceled = _object(_build("payment_intent.canceled", order_id="order-1"))
    processing = _object(_build("payment_intent.processing", order_id="order-1"))

    assert failed["last_payment_error"]["payment_method"]["type"] == "sofort"
    assert failed["last_payment_error"]["message"]
    assert canceled["cancellation_reason"]
    assert processing["last_payment_error"] is None
    assert processing["cancellation_reason"] is None
    assert processing["next_action"] is None


@pytest.mark.parametrize(
    ("event_type", "status", "created"),
    [
        ("checkout.session.completed", "complete", NOW_MS),
        ("checkout.session.expired", "expired", NOW_MS - DAY_MS),
    ],
)
def test_checkout_session_fields(event_type: str, status: str, created: int) -> None:
    """Checkout sessions carry status, unpaid SOFORT payment_status, totals and a 24 h expiry."""
    obj = _object(_build(event_type, order_id="order-9", amount=750, currency="gbp"))

    assert obj["object"] == "checkout.session"
    assert obj["status"] == status
    assert obj["payment_status"] == "unpaid"
    assert obj["mode"] == "payment"
    assert obj["amount_total"] == 750
    assert obj["currency"] == "GBP"
    assert obj["created"] == created
    assert obj["expires_at"] == created + DAY_MS
    assert obj["payment_intent"].startswith("pi_")
    assert obj["url"].startswith("https://checkouttest.wooshpay.com/pay/")


def test_paid_checkout_session_is_complete_and_paid() -> None:
    """`paid` gives a complete session paid by card, with its total, currency and PaymentIntent."""
    obj = _object(
        _build(
            "checkout.session.completed", order_id="order-3", amount=1250, currency="gbp", paid=True
        )
    )
    intent = _object(_build("payment_intent.succeeded", order_id="order-3"))

    assert (obj["status"], obj["payment_status"]) == ("complete", "paid")
    assert (obj["amount_total"], obj["currency"]) == (1250, "GBP")
    assert obj["payment_intent"] == intent["id"]
    assert obj["payment_method_types"] == ["card"]
    assert obj["client_reference_id"] == "order-3"


def test_paid_checkout_session_pays_the_order() -> None:
    """Parsed by the service, a paid session alone makes an order with matching terms paid."""
    event = _build("checkout.session.completed", order_id="order-3", amount=1250, paid=True)
    parsed = events.parse_payment_event(events.parse_envelope(encode_event(event)))

    state = project(OrderTerms("order-3", 1250, "EUR"), [parsed])

    assert (state.status, state.amount_received, state.needs_review) == ("paid", 1250, False)


@pytest.mark.parametrize(
    "event_type", [t for t in SUPPORTED_TYPES if t != "checkout.session.completed"]
)
def test_paid_applies_only_to_a_completed_session(event_type: str) -> None:
    """`paid` on any other event type is refused with ValueError rather than ignored."""
    with pytest.raises(ValueError, match=r"paid applies only to checkout\.session\.completed"):
        build_event(event_type, EventOptions(order_id="order-3", paid=True), now_ms=NOW_MS)


def test_refund_fields_come_from_options() -> None:
    """A refund event carries the given refund id, status, amount and payment intent."""
    obj = _object(
        _build(
            "charge.refund.updated",
            order_id="order-1",
            amount=2000,
            currency="eur",
            payment_intent="pi_given",
            refund_id="re_given",
            refund_status="pending",
            refund_amount=500,
        )
    )

    expected = {
        "id": "re_given",
        "object": "refund",
        "amount": 500,
        "currency": "EUR",
        "payment_intent": "pi_given",
        "status": "pending",
        "reason": "requested_by_customer",
        "created": NOW_MS,
    }
    assert {key: obj.get(key) for key in expected} == expected


def test_refund_defaults_are_a_new_full_refund() -> None:
    """Without options a refund is a fresh succeeded re_ refund of the whole amount."""
    first = _object(_build("charge.refund.updated", order_id="order-1", amount=3100))
    second = _object(_build("charge.refund.updated", order_id="order-1", amount=3100))

    assert first["id"].startswith("re_")
    assert first["id"] != second["id"]
    assert first["amount"] == 3100
    assert first["status"] == "succeeded"
    assert first["failure_reason"] is None


def test_same_order_shares_payment_intent_and_session_across_calls() -> None:
    """Separate sends for one order name the same payment intent and checkout session."""
    pi_ids = {_object(_build(t, order_id="order-5"))["id"] for t in PAYMENT_INTENT_TYPES}
    session = _object(_build("checkout.session.completed", order_id="order-5"))
    expired = _object(_build("checkout.session.expired", order_id="order-5"))
    refund = _object(_build("charge.refund.updated", order_id="order-5"))

    assert len(pi_ids) == 1
    assert session["payment_intent"] in pi_ids
    assert refund["payment_intent"] in pi_ids
    assert session["id"] == expired["id"]


def test_payment_intent_ids_differ_between_orders_and_without_order() -> None:
    """Different orders, and sends without an order, get distinct payment intents."""
    pi_type = "payment_intent.succeeded"

    assert (
        _object(_build(pi_type, order_id="a"))["id"] != _object(_build(pi_type, order_id="b"))["id"]
    )
    assert _object(_build(pi_type))["id"] != _object(_build(pi_type))["id"]


def test_explicit_ids_win_over_derived_ones() -> None:
    """Given payment intent and checkout session ids are used verbatim."""
    options = {"order_id": "order-1", "payment_intent": "pi_x", "checkout_session": "cs_y"}

    assert _object(_build("payment_intent.processing", **options))["id"] == "pi_x"
    session = _object(_build("checkout.session.completed", **options))
    assert session["id"] == "cs_y"
    assert session["payment_intent"] == "pi_x"


def test_event_ids_are_unique_per_call() -> None:
    """Two builds of the same event get different event ids, so the receiver sees two events."""
    ids = {_build("payment_intent.succeeded", order_id="order-1")["id"] for _ in range(50)}

    assert len(ids) == 50


@pytest.mark.parametrize(
    "event_type", ["charge.refunded", "payment_intent.amount_capturable_updated", "", "PI"]
)
def test_unsupported_type_raises(event_type: str) -> None:
    """An event type outside the supported nine is refused with ValueError."""
    with pytest.raises(ValueError, match="unsupported event type"):
        build_event(event_type, EventOptions(), now_ms=NOW_MS)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (EventOptions(amount=-1), "amount"),
        (EventOptions(refund_amount=-5), "refund_amount"),
        (EventOptions(currency="EURO"), "currency"),
        (EventOptions(currency="E1R"), "currency"),
        (EventOptions(refund_status="succeded"), "refund_status"),
    ],
)
def test_invalid_options_raise(options: EventOptions, message: str) -> None:
    """Options the receiver would reject as a malformed object are refused up front."""
    with pytest.raises(ValueError, match=message):
        build_event("charge.refund.updated", options, now_ms=NOW_MS)


def test_encode_event_is_compact_json() -> None:
    """encode_event gives compact UTF-8 JSON that decodes back to the same event."""
    event = _build("payment_intent.succeeded", order_id="bestellung-ü")

    body = encode_event(event)

    assert json.loads(body) == event
    assert b", " not in body
    assert b'": ' not in body
    assert "bestellung-ü".encode() in body


class _Recorder:
    """A tiny webhook receiver that records each request and answers a fixed response."""

    def __init__(self, status: int, text: str) -> None:
        self.status = status
        self.text = text
        self.requests: list[tuple[bytes, str | None, str | None, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(
            (
                body,
                request.headers.get("Content-Type"),
                request.headers.get("Wooshpay-Signature"),
                request.method,
            )
        )
        return web.Response(status=self.status, text=self.text)


async def _post_to_recorder(
    recorder: _Recorder, body: bytes, **kwargs: Any
) -> tuple[SendResult, tuple[bytes, str | None, str | None, str]]:
    app = web.Application()
    app.router.add_post("/webhooks/wooshpay", recorder.handle)
    async with TestServer(app) as server:
        result = await post_event(
            str(server.make_url("/webhooks/wooshpay")), body, SECRET, **kwargs
        )
    assert len(recorder.requests) == 1
    return result, recorder.requests[0]


async def test_post_event_sends_signed_body_and_returns_answer() -> None:
    """post_event POSTs the exact bytes as JSON, verifiably signed, and returns the reply."""
    body = encode_event(_build("payment_intent.succeeded", order_id="order-1"))
    recorder = _Recorder(200, '{"received": true}')

    result, (sent_body, content_type, signature, method) = await _post_to_recorder(recorder, body)

    assert result == SendResult(status=200, body='{"received": true}')
    assert method == "POST"
    assert sent_body == body
    assert content_type == "application/json"
    assert signature is not None
    signed_at = verify(signature, sent_body, [SECRET], now=time.time(), tolerance_s=300)
    assert abs(signed_at - time.time()) < 60


async def test_post_event_uses_given_timestamp() -> None:
    """An explicit timestamp is the signature's t, and a stale one fails verification."""
    body = b'{"id":"evt_1","type":"payment_intent.created"}'
    recorder = _Recorder(200, "ok")
    stale = int(time.time()) - 3600

    _, (_, _, signature, _) = await _post_to_recorder(recorder, body, timestamp=stale)

    assert signature is not None
    assert signature.startswith(f"t={stale},v1=")
    with pytest.raises(SignatureError) as caught:
        verify(signature, body, [SECRET], now=time.time(), tolerance_s=300)
    assert caught.value.code == TIMESTAMP_OUTSIDE_TOLERANCE
    assert verify(signature, body, [SECRET], now=stale, tolerance_s=300) == stale


async def test_post_event_returns_error_answers() -> None:
    """A non-2xx answer is returned as a result with its status and body, not raised."""
    recorder = _Recorder(400, '{"error": "bad signature"}')

    result, _ = await _post_to_recorder(recorder, b"{}")

    assert result.status == 400
    assert result.body == '{"error": "bad signature"}'
