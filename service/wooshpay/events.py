"""Parsing WooshPay event envelopes, and the objects they carry into the domain's typed values
(`service.domain.events`).

Two levels, because they fail differently: a body that is not an event envelope is bad input
(400 at the ingress, nothing recorded); an envelope whose `data.object` cannot be understood for
its type is recorded and then parked by the worker as a permanent failure.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson

from service.domain.currency import normalise_currency
from service.domain.events import (
    CHECKOUT_SESSION_TYPES,
    IN_SCOPE_TYPES,
    PAYMENT_INTENT_TYPES,
    REFUND_STATUSES,
    REFUND_TYPES,
    CheckoutSession,
    PaymentEvent,
    PaymentIntent,
    PaymentObject,
    Refund,
)
from service.wooshpay.timestamps import to_milliseconds

MAX_ID_LENGTH: Final = 255
# Largest integer we accept for timestamps and amounts: beyond 64-bit it is nonsense, and
# PostgreSQL BIGINT would refuse it.
MAX_INT: Final = 2**63 - 1


class InvalidEvent(ValueError):
    """The body is not a WooshPay event envelope. The message is a short, safe reason."""


class InvalidObject(ValueError):
    """The event's `data.object` cannot be understood for its type (a permanent failure)."""


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A validated event envelope. `object` is the untrusted `data.object` mapping."""

    event_id: str
    type: str
    created_ms: int
    livemode: bool | None
    object: Mapping[str, Any]

    @property
    def in_scope(self) -> bool:
        return self.type in IN_SCOPE_TYPES


def parse_envelope(body: bytes) -> WebhookEvent:
    """Validate a raw request body as an event envelope; raise InvalidEvent with a reason."""
    document = _load_json(body)
    if not isinstance(document, dict):
        raise InvalidEvent("event must be a JSON object")
    event_id = _envelope_string(document, "id")
    event_type = _envelope_string(document, "type")
    created = document.get("created")
    if not _is_int(created) or not 0 < created <= MAX_INT:
        raise InvalidEvent("event 'created' must be a positive integer timestamp")
    data = document.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidEvent("event 'data.object' must be an object")
    livemode = document.get("livemode")
    return WebhookEvent(
        event_id=event_id,
        type=event_type,
        created_ms=to_milliseconds(created),
        livemode=livemode if isinstance(livemode, bool) else None,
        object=data["object"],
    )


def _load_json(body: bytes) -> Any:
    """The JSON document in body, which must be UTF-8 (RFC 8259)."""
    try:
        # orjson first: every webhook body is parsed here, and orjson is the faster parser.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses some documents the standard library reads: numbers beyond 64 bits (in any
    # field, so a signed event would be refused for ever over a field we never read), NaN. Those
    # keep the standard library's verdict, as before orjson; a refused body costs two parses.
    try:
        # Decoded first: json.loads(bytes) would also guess UTF-16/32.
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidEvent("body is not valid JSON") from exc


def parse_payment_event(event: WebhookEvent) -> PaymentEvent:
    """Parse an in-scope event's object; raise InvalidObject when it does not fit its type."""
    parsed: PaymentObject
    if event.type in PAYMENT_INTENT_TYPES:
        parsed = _payment_intent(event.object)
    elif event.type in CHECKOUT_SESSION_TYPES:
        parsed = _checkout_session(event.object)
    elif event.type in REFUND_TYPES:
        parsed = _refund(event.object)
    else:
        raise InvalidObject(f"event type {event.type!r} is not reconciled")
    return PaymentEvent(event.event_id, event.type, event.created_ms, parsed)


def _payment_intent(obj: Mapping[str, Any]) -> PaymentIntent:
    return PaymentIntent(
        id=_object_id(obj, "pi_"),
        amount=_amount(obj, "amount"),
        amount_received=_optional_amount(obj, "amount_received"),
        currency=_currency(obj),
        merchant_order_id=_optional_string(obj, "merchant_order_id"),
        metadata_order_id=_metadata_order_id(obj),
    )


def _checkout_session(obj: Mapping[str, Any]) -> CheckoutSession:
    currency = obj.get("currency")
    return CheckoutSession(
        id=_object_id(obj, "cs_"),
        client_reference_id=_optional_string(obj, "client_reference_id"),
        metadata_order_id=_metadata_order_id(obj),
        payment_intent=_optional_string(obj, "payment_intent"),
        payment_status=_optional_string(obj, "payment_status"),
        amount_total=_optional_amount(obj, "amount_total"),
        currency=_currency(obj) if currency not in (None, "") else None,
    )


def _refund(obj: Mapping[str, Any]) -> Refund:
    status = obj.get("status")
    if not isinstance(status, str) or status not in REFUND_STATUSES:
        raise InvalidObject("refund 'status' is not a known refund status")
    payment_intent = _optional_string(obj, "payment_intent")
    if payment_intent is None:
        raise InvalidObject("refund has no 'payment_intent'")
    return Refund(
        id=_object_id(obj, "re_"),
        amount=_amount(obj, "amount"),
        currency=_currency(obj),
        payment_intent=payment_intent,
        status=str(status),
    )


def _envelope_string(document: Mapping[str, Any], key: str) -> str:
    value = document.get(key)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"event '{key}' must be a non-empty string")
    if not value.isprintable():
        raise InvalidEvent(f"event '{key}' has control characters")
    return value


def _object_id(obj: Mapping[str, Any], prefix: str) -> str:
    # Ids are prefixed Stripe-style (`pi_...`) in most examples, but native WooshPay examples use
    # numeric "snowflake" ids too, so the prefix is not enforced; `prefix` documents the shape.
    del prefix
    value = _optional_string(obj, "id")
    if value is None:
        raise InvalidObject("object has no 'id'")
    return value


def _optional_string(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise InvalidObject(f"object '{key}' must be a short string")
    return value


def _metadata_order_id(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    return _optional_string(metadata, "order_id")


def _amount(obj: Mapping[str, Any], key: str) -> int:
    value = _optional_amount(obj, key)
    if value is None:
        raise InvalidObject(f"object '{key}' is required")
    return value


def _optional_amount(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_INT:
        raise InvalidObject(f"object '{key}' must be a non-negative integer")
    return int(value)


def _currency(obj: Mapping[str, Any]) -> str:
    try:
        return normalise_currency(obj.get("currency"))
    except ValueError as error:
        raise InvalidObject(str(error)) from error


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
