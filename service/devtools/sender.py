"""Build, sign and POST realistic WooshPay events: the `send` command for development and tests.

The objects mirror what WooshPay's own (native) examples show rather than Stripe's: millisecond
timestamps, upper-case currency, `merchant_order_id` on PaymentIntents, SOFORT as the payment
method (redirect, then delayed confirmation). A test event that looks like production traffic
exercises the same parsing and reconciliation paths as production traffic.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from service.domain.currency import normalise_currency
from service.domain.events import REFUND_STATUSES, EventType, RefundStatus
from service.wooshpay.signatures import SIGNATURE_HEADER, sign_header

# Every type the service reconciles, as plain strings (a command line's choices).
SUPPORTED_TYPES: Final[tuple[str, ...]] = tuple(event_type.value for event_type in EventType)

# The API version WooshPay's webhook guide uses when creating endpoints.
API_VERSION: Final = "1.0.1"
# WooshPay: "Checkout Sessions expire 24 hours after creation" (expires_at is in ms).
CHECKOUT_SESSION_LIFETIME_MS: Final = 24 * 60 * 60 * 1000
RETURN_URL: Final = "https://merchant.example/checkout/return"

# PaymentIntent status carried by each payment_intent.* event. A failed attempt returns the PI to
# `requires_payment_method` (the customer may retry), as WooshPay's save-card guide describes.
_PAYMENT_INTENT_STATUS: Final[Mapping[str, str]] = {
    EventType.PAYMENT_INTENT_CREATED: "requires_payment_method",
    EventType.PAYMENT_INTENT_REQUIRES_ACTION: "requires_action",
    EventType.PAYMENT_INTENT_PROCESSING: "processing",
    EventType.PAYMENT_INTENT_SUCCEEDED: "succeeded",
    EventType.PAYMENT_INTENT_PAYMENT_FAILED: "requires_payment_method",
    EventType.PAYMENT_INTENT_CANCELED: "canceled",
}
# SOFORT is a delayed method: the session completes while still unpaid, and an expired session
# was never paid either, so `payment_status` is `unpaid` for both (unless `paid` is asked for).
_CHECKOUT_SESSION_STATUS: Final[Mapping[str, str]] = {
    EventType.CHECKOUT_SESSION_COMPLETED: "complete",
    EventType.CHECKOUT_SESSION_EXPIRED: "expired",
}
# The one event that can carry a paid session: a session paid at completion, as an immediate
# method (a card) gives (Stripe's shape; WooshPay's docs show no paid session).
PAYABLE_TYPE: Final = EventType.CHECKOUT_SESSION_COMPLETED.value
# Events caused by a merchant API call carry that request's id; the others are WooshPay's own.
_API_TRIGGERED: Final = frozenset(
    {EventType.PAYMENT_INTENT_CREATED, EventType.PAYMENT_INTENT_CANCELED}
)


@dataclass(frozen=True, slots=True)
class EventOptions:
    """What varies between test events; everything else is filled in realistically."""

    order_id: str | None = None
    amount: int = 2000
    currency: str = "EUR"
    # None: derived from order_id, so every `send` for one order shares the PI (random without).
    payment_intent: str | None = None
    # None: derived from order_id like the PI, so `completed`/`expired` name the same session.
    checkout_session: str | None = None
    # None: a fresh random `re_...` id, i.e. a new refund each time.
    refund_id: str | None = None
    refund_status: str = RefundStatus.SUCCEEDED.value
    # None: a full refund of `amount`.
    refund_amount: int | None = None
    # A checkout.session.completed whose payment already succeeded (`payment_status: paid`).
    paid: bool = False


@dataclass(frozen=True, slots=True)
class SendResult:
    """The receiver's answer: HTTP status and body text."""

    status: int
    body: str


def build_event(event_type: str, options: EventOptions, *, now_ms: int) -> dict[str, Any]:
    """A realistic WooshPay event envelope: raise ValueError for an unsupported type."""
    if event_type not in SUPPORTED_TYPES:
        raise ValueError(
            f"unsupported event type {event_type!r}; supported: {', '.join(SUPPORTED_TYPES)}"
        )
    if options.paid and event_type != PAYABLE_TYPE:
        raise ValueError(f"paid applies only to {PAYABLE_TYPE}, not {event_type}")
    _check_options(options)
    request_id = f"req_{secrets.token_hex(12)}" if event_type in _API_TRIGGERED else None
    return {
        # Unique per call: the receiver deduplicates on the event id, so two sends must differ.
        "id": f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": now_ms,
        "livemode": False,
        "type": event_type,
        "data": {"object": _data_object(event_type, options, now_ms)},
        "pending_webhooks": 1,
        "request": {"id": request_id, "idempotency_key": None},
    }


def encode_event(event: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes, exactly what gets signed and sent."""
    # allow_nan=False: NaN/Infinity are not JSON and a strict receiver would reject them.
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


async def post_event(
    url: str,
    body: bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    timeout_s: float = 10.0,
) -> SendResult:
    """Sign body (timestamp defaults to now, seconds) and POST it with Content-Type application/json
    and the Wooshpay-Signature header, using aiohttp.ClientSession.

    Any HTTP status is returned, not raised: a 4xx/5xx is an answer the caller wants to see.
    Connection failures and timeouts propagate (aiohttp.ClientError, TimeoutError).
    """
    signed_at = int(time.time()) if timestamp is None else timestamp
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_header(body, secret, timestamp=signed_at),
    }
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        # errors="replace": a receiver's odd bytes must not hide its status from the caller.
        text = await response.text(errors="replace")
        return SendResult(status=response.status, body=text)


def _check_options(options: EventOptions) -> None:
    # Fail at the command line rather than send an event the receiver would park as invalid.
    for name, value in (("amount", options.amount), ("refund_amount", options.refund_amount)):
        if value is not None and (isinstance(value, bool) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer (minor units)")
    normalise_currency(options.currency)
    if options.refund_status not in REFUND_STATUSES:
        raise ValueError(f"refund_status must be one of {', '.join(sorted(REFUND_STATUSES))}")


def _data_object(event_type: str, options: EventOptions, now_ms: int) -> dict[str, Any]:
    if event_type in _PAYMENT_INTENT_STATUS:
        return _payment_intent(event_type, options, now_ms)
    if event_type in _CHECKOUT_SESSION_STATUS:
        return _checkout_session(event_type, options, now_ms)
    return _refund(options, now_ms)


def _payment_intent(event_type: str, options: EventOptions, now_ms: int) -> dict[str, Any]:
    pi_id = _payment_intent_id(options)
    status = _PAYMENT_INTENT_STATUS[event_type]
    obj: dict[str, Any] = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": options.amount,
        "amount_capturable": None,
        # WooshPay leaves this null until the money is received (and sometimes even then).
        "amount_received": None,
        "cancel_at": "",
        "cancellation_reason": None,
        "capture_method": "automatic",
        # Stable per PI, like the real one: derived from the id rather than random.
        "client_secret": f"{pi_id}_secret_{_digest('client_secret', pi_id)}",
        "confirmation_method": "automatic",
        "created": now_ms,
        "currency": options.currency.upper(),
        "customer": None,
        "description": None,
        "last_payment_error": None,
        "livemode": False,
        "merchant_order_id": options.order_id,
        "metadata": _order_metadata(options),
        "next_action": None,
        "payment_method": None if status == "requires_payment_method" else _payment_method(pi_id),
        "payment_method_data": {
            "type": "sofort",
            "billing_details": {"address": {"country": "DE"}},
        },
        "payment_method_types": ["sofort"],
        "receipt_email": None,
        "return_url": RETURN_URL,
        "status": status,
    }
    details = _PAYMENT_INTENT_DETAILS.get(event_type)
    if details is not None:
        obj.update(details(pi_id, options))
    return obj


def _redirect_details(pi_id: str, options: EventOptions) -> dict[str, Any]:
    # SOFORT's next_action uses WooshPay's own key, not Stripe's `redirect_to_url.url`.
    url = f"https://r3.girogate.de/ti/sofort?tx={_digest('girogate', pi_id)}"
    return {"next_action": {"type": "redirect_to_url", "sofort_handle_redirect": {"url": url}}}


def _succeeded_details(pi_id: str, options: EventOptions) -> dict[str, Any]:
    return {"amount_received": options.amount}


def _failed_details(pi_id: str, options: EventOptions) -> dict[str, Any]:
    error = {
        "type": "invalid_request_error",
        "code": "payment_intent_payment_attempt_failed",
        "message": "The SOFORT payment was not completed by the customer's bank.",
        "payment_method": {"id": _payment_method(pi_id), "type": "sofort"},
    }
    return {"last_payment_error": error}


def _canceled_details(pi_id: str, options: EventOptions) -> dict[str, Any]:
    return {"cancellation_reason": "requested_by_customer"}


_PAYMENT_INTENT_DETAILS: Final[Mapping[str, Callable[[str, EventOptions], dict[str, Any]]]] = {
    EventType.PAYMENT_INTENT_REQUIRES_ACTION: _redirect_details,
    EventType.PAYMENT_INTENT_SUCCEEDED: _succeeded_details,
    EventType.PAYMENT_INTENT_PAYMENT_FAILED: _failed_details,
    EventType.PAYMENT_INTENT_CANCELED: _canceled_details,
}


def _checkout_session(event_type: str, options: EventOptions, now_ms: int) -> dict[str, Any]:
    cs_id = _checkout_session_id(options)
    status = _CHECKOUT_SESSION_STATUS[event_type]
    # An expired session expires now, so it was created 24 h ago; a completed one is fresh.
    created = now_ms - CHECKOUT_SESSION_LIFETIME_MS if status == "expired" else now_ms
    return {
        "id": cs_id,
        "object": "checkout.session",
        "amount_subtotal": options.amount,
        "amount_total": options.amount,
        "cancel_url": "https://merchant.example/checkout/cancel",
        "client_reference_id": options.order_id,
        "created": created,
        "currency": options.currency.upper(),
        "customer": "",
        "customer_email": None,
        "expires_at": created + CHECKOUT_SESSION_LIFETIME_MS,
        "livemode": False,
        "metadata": _order_metadata(options),
        "mode": "payment",
        # WooshPay creates the PaymentIntent together with the session.
        "payment_intent": _payment_intent_id(options),
        # Paid at completion means an immediate method; SOFORT sessions complete unpaid.
        "payment_method_types": ["card"] if options.paid else ["sofort"],
        "payment_status": "paid" if options.paid else "unpaid",
        "status": status,
        "success_url": "https://merchant.example/checkout/success",
        # The hosted page's path says `cs_test_` even though the id has no `test_`.
        "url": f"https://checkouttest.wooshpay.com/pay/cs_test_{cs_id.removeprefix('cs_')}",
    }


def _refund(options: EventOptions, now_ms: int) -> dict[str, Any]:
    amount = options.amount if options.refund_amount is None else options.refund_amount
    return {
        "id": options.refund_id or f"re_{secrets.token_hex(12)}",
        "object": "refund",
        "amount": amount,
        "created": now_ms,
        "currency": options.currency.upper(),
        "description": None,
        "failure_reason": "unknown" if options.refund_status == RefundStatus.FAILED else None,
        # A Refund has no `charge` or order id at WooshPay: it links to its order via the PI.
        "metadata": {},
        "payment_intent": _payment_intent_id(options),
        "reason": "requested_by_customer",
        "status": options.refund_status,
    }


def _order_metadata(options: EventOptions) -> dict[str, str]:
    return {} if options.order_id is None else {"order_id": options.order_id}


def _payment_intent_id(options: EventOptions) -> str:
    return options.payment_intent or _order_scoped_id("pi_", "payment_intent", options.order_id)


def _checkout_session_id(options: EventOptions) -> str:
    return options.checkout_session or _order_scoped_id("cs_", "checkout_session", options.order_id)


def _order_scoped_id(prefix: str, kind: str, order_id: str | None) -> str:
    # Derived from the order id so separate `send` invocations for one order describe the same
    # payment; random when there is no order, so unrelated test events never collide.
    if order_id is None:
        return f"{prefix}{secrets.token_hex(12)}"
    return f"{prefix}{_digest(kind, order_id)}"


def _payment_method(pi_id: str) -> str:
    return f"pm_{_digest('payment_method', pi_id)}"


def _digest(kind: str, seed: str) -> str:
    # 24 hex digits (96 bits), the same length as the random ids; `kind` keeps the ids derived
    # from one seed (PI, session, client secret) distinct from each other.
    return hashlib.sha256(f"{kind}:{seed}".encode()).hexdigest()[:24]
