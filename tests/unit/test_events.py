"""Unit tests for service.wooshpay.events: envelope validation and parsing of the objects events
carry."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from service.domain.events import (
    CHECKOUT_SESSION_TYPES,
    IN_SCOPE_TYPES,
    PAYMENT_INTENT_TYPES,
    REFUND_TYPES,
    CheckoutSession,
    PaymentEvent,
    PaymentIntent,
    Refund,
)
from service.wooshpay.events import (
    InvalidEvent,
    InvalidObject,
    WebhookEvent,
    parse_envelope,
    parse_payment_event,
)

CREATED_MS = 1_754_477_408_123
CREATED_S = 1_754_477_408


def _payment_intent(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        "object": "payment_intent",
        "amount": 2000,
        "amount_capturable": None,
        "amount_received": 2000,
        "capture_method": "automatic",
        "client_secret": "pi_3PqXyZ2eZvKYlo2C1a2b3c4d_secret_abc",
        "created": CREATED_MS,
        "currency": "EUR",
        "livemode": False,
        "merchant_order_id": "order_1001",
        "metadata": {"order_id": "order_1001"},
        "next_action": None,
        "payment_method_types": ["sofort"],
        "status": "succeeded",
    }
    obj.update(changes)
    return obj


def _checkout_session(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "cs_a1b2c3d4e5",
        "object": "checkout.session",
        "amount_subtotal": 2000,
        "amount_total": 2000,
        "client_reference_id": "order_1001",
        "created": CREATED_MS,
        "currency": "eur",
        "expires_at": CREATED_MS + 86_400_000,
        "metadata": {"order_id": "order_1001"},
        "mode": "payment",
        "payment_intent": "pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        "payment_status": "unpaid",
        "status": "complete",
    }
    obj.update(changes)
    return obj


def _refund(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "re_1Nispe2eZvKYlo2Cd31jOCgZ",
        "object": "refund",
        "amount": 500,
        "currency": "EUR",
        "created": CREATED_MS,
        "payment_intent": "pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        "reason": "requested_by_customer",
        "status": "succeeded",
    }
    obj.update(changes)
    return obj


def _object_for(event_type: str) -> dict[str, Any]:
    if event_type in PAYMENT_INTENT_TYPES:
        return _payment_intent()
    if event_type in CHECKOUT_SESSION_TYPES:
        return _checkout_session()
    return _refund()


def _event(
    event_type: str = "payment_intent.succeeded", obj: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "id": "evt_3PqXyZ2eZvKYlo2C0abcdef",
        "object": "event",
        "api_version": "1.0.1",
        "created": CREATED_MS,
        "livemode": False,
        "type": event_type,
        "data": {"object": _object_for(event_type) if obj is None else obj},
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
    }


def _body(document: object) -> bytes:
    return json.dumps(document).encode()


def _parse_object(event_type: str, obj: dict[str, Any]) -> PaymentEvent:
    return parse_payment_event(parse_envelope(_body(_event(event_type, obj))))


def _invalid(body: bytes) -> str:
    with pytest.raises(InvalidEvent) as caught:
        parse_envelope(body)
    reason = str(caught.value)
    assert reason, "InvalidEvent carries a reason"
    assert "\n" not in reason
    return reason


def _without(document: dict[str, Any], *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return changed


def _with(document: dict[str, Any], value: object, *path: str) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    target = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


# --- parse_envelope: accepted -------------------------------------------------------------------


def test_realistic_event_is_parsed() -> None:
    """A realistic WooshPay event yields its id, type, created (ms), livemode and object."""
    document = _event()
    event = parse_envelope(_body(document))

    assert isinstance(event, WebhookEvent)
    assert event.event_id == "evt_3PqXyZ2eZvKYlo2C0abcdef"
    assert event.type == "payment_intent.succeeded"
    assert event.created_ms == CREATED_MS
    assert event.livemode is False
    assert dict(event.object) == document["data"]["object"]
    assert event.in_scope


def test_created_in_seconds_is_normalised_to_milliseconds() -> None:
    """An event `created` given in seconds is stored as milliseconds."""
    event = parse_envelope(_body(_with(_event(), CREATED_S, "created")))
    assert event.created_ms == CREATED_S * 1000


def test_created_in_milliseconds_is_kept() -> None:
    """An event `created` above 10^12 is already milliseconds and is kept as is."""
    event = parse_envelope(_body(_with(_event(), CREATED_MS, "created")))
    assert event.created_ms == CREATED_MS


def test_largest_64_bit_created_is_accepted() -> None:
    """2**63 - 1 is the largest `created` a BIGINT column can hold, and it is accepted."""
    event = parse_envelope(_body(_with(_event(), 2**63 - 1, "created")))
    assert event.created_ms == 2**63 - 1


@pytest.mark.parametrize(("livemode", "expected"), [(True, True), (False, False), ("yes", None)])
def test_livemode_is_kept_only_when_boolean(livemode: object, expected: bool | None) -> None:
    """`livemode` is kept when it is a boolean, otherwise it is unknown (None)."""
    event = parse_envelope(_body(_with(_event(), livemode, "livemode")))
    assert event.livemode is expected


def test_out_of_scope_type_is_a_valid_envelope() -> None:
    """An unknown event type is still an envelope (acknowledged and ignored), just not in scope."""
    event = parse_envelope(_body(_event("customer.created", {"id": "cus_1"})))
    assert event.type == "customer.created"
    assert not event.in_scope
    with pytest.raises(InvalidObject):
        parse_payment_event(event)


# --- parse_envelope: rejected -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        b'{"id": "evt_1",}',
        b"\xff\xfe\xfd",
        b'{"id": "evt_\xff", "type": "x"}',
    ],
)
def test_non_json_or_non_utf8_body_rejected(body: bytes) -> None:
    """A body that is not UTF-8 JSON is an InvalidEvent saying so."""
    assert "JSON" in _invalid(body)


def test_utf16_encoded_event_rejected() -> None:
    """A webhook body must be UTF-8 JSON (RFC 8259 §8.1): a UTF-16 encoded event is refused."""
    body = json.dumps(_event()).encode("utf-16")
    _invalid(body)


@pytest.mark.parametrize("literal", ["1" + "0" * 100, "18446744073709551616", "1e999", "NaN"])
def test_numbers_past_64_bits_in_a_field_not_read_do_not_refuse_the_event(literal: str) -> None:
    """JSON leaves number range to the parser: a huge number in a field the service never reads
    must not make a signed event unreadable (WooshPay would retry it for 72 hours, then drop it)."""
    marker = "__number__"
    text = _body(_event(obj={**_payment_intent(), "unrelated": marker})).decode()
    envelope = parse_envelope(text.replace(json.dumps(marker), literal).encode())
    assert envelope.event_id == _event()["id"]
    assert (
        parse_payment_event(envelope).object
        == _parse_object("payment_intent.succeeded", _payment_intent()).object
    )


@pytest.mark.parametrize("literal", ["1" + "0" * 30, "1e999"])
def test_a_number_past_64_bits_where_an_amount_belongs_is_an_invalid_object(literal: str) -> None:
    marker = "__number__"
    text = _body(_event(obj={**_payment_intent(), "amount": marker})).decode()
    envelope = parse_envelope(text.replace(json.dumps(marker), literal).encode())
    with pytest.raises(InvalidObject, match="amount"):
        parse_payment_event(envelope)


@pytest.mark.parametrize("document", [[], [_event()], "evt_1", 42, None, True])
def test_json_that_is_not_an_object_rejected(document: object) -> None:
    """Arrays, strings, numbers, null and booleans are not event envelopes."""
    assert "object" in _invalid(_body(document))


@pytest.mark.parametrize("key", ["id", "type"])
@pytest.mark.parametrize("value", [None, "", "   ", 42, ["evt_1"], {"id": "evt_1"}, True])
def test_id_and_type_must_be_non_empty_strings(key: str, value: object) -> None:
    """A missing, empty, blank or non-string `id`/`type` is refused, naming the key."""
    document = _without(_event(), key) if value is None else _with(_event(), value, key)
    assert f"'{key}'" in _invalid(_body(document))


@pytest.mark.parametrize("key", ["id", "type"])
def test_overlong_id_and_type_rejected(key: str) -> None:
    """An `id`/`type` longer than a database id column holds is refused."""
    assert f"'{key}'" in _invalid(_body(_with(_event(), "e" * 256, key)))


@pytest.mark.parametrize("value", ["evt_1\n", "evt\x00_1", "evt_\x1b[31m1", "evt_1\u2028"])
def test_control_characters_in_id_rejected(value: str) -> None:
    """Control characters in the event id (log injection, terminal escapes) are refused."""
    reason = _invalid(_body(_with(_event(), value, "id")))
    assert "'id'" in reason
    assert "control" in reason


@pytest.mark.parametrize(
    "created",
    [
        pytest.param(None, id="missing"),
        pytest.param(str(CREATED_MS), id="string"),
        pytest.param(True, id="bool"),
        pytest.param(-CREATED_MS, id="negative"),
        pytest.param(0, id="zero"),
        pytest.param(float(CREATED_MS), id="float"),
        pytest.param(2**63, id="2**63"),
        pytest.param(2**64 + 1, id="huge"),
    ],
)
def test_bad_created_rejected(created: object) -> None:
    """`created` must be a positive integer timestamp that fits 64 bits."""
    document = (
        _without(_event(), "created") if created is None else _with(_event(), created, "created")
    )
    assert "'created'" in _invalid(_body(document))


def test_created_with_thousands_of_digits_rejected() -> None:
    """An integer too long for Python's int parser is bad input, not a crash."""
    body = _body(_event()).replace(str(CREATED_MS).encode(), b"1" + b"0" * 5000)
    _invalid(body)


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(_without(_event(), "data"), id="data-missing"),
        pytest.param(_with(_event(), None, "data"), id="data-null"),
        pytest.param(_with(_event(), [], "data"), id="data-array"),
        pytest.param(_with(_event(), "x", "data"), id="data-string"),
        pytest.param(_without(_event(), "data", "object"), id="object-missing"),
        pytest.param(_with(_event(), None, "data", "object"), id="object-null"),
        pytest.param(_with(_event(), [1], "data", "object"), id="object-array"),
        pytest.param(_with(_event(), "pi_1", "data", "object"), id="object-string"),
    ],
)
def test_data_object_must_be_an_object(document: dict[str, Any]) -> None:
    """`data` and `data.object` are required JSON objects."""
    assert "data.object" in _invalid(_body(document))


def test_deeply_nested_arrays_rejected_without_recursion_error() -> None:
    """100000 nested arrays are an InvalidEvent, never a RecursionError."""
    depth = 100_000
    _invalid(b"[" * depth + b"]" * depth)


def test_deeply_nested_object_inside_envelope_rejected() -> None:
    """Deep nesting hidden inside data.object is an InvalidEvent too."""
    depth = 100_000
    body = _body(_event()).replace(
        b'"next_action": null', b'"next_action": ' + b'{"a":' * depth + b"1" + b"}" * depth
    )
    assert body != _body(_event())
    _invalid(body)


# --- parse_payment_event ------------------------------------------------------------------------


@pytest.mark.parametrize("event_type", sorted(PAYMENT_INTENT_TYPES))
def test_payment_intent_events_parse_a_payment_intent(event_type: str) -> None:
    """Every payment_intent.* event parses its object as a PaymentIntent."""
    parsed = _parse_object(event_type, _payment_intent())

    assert parsed.event_id == "evt_3PqXyZ2eZvKYlo2C0abcdef"
    assert parsed.type == event_type
    assert parsed.created_ms == CREATED_MS
    assert parsed.object == PaymentIntent(
        id="pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        amount=2000,
        amount_received=2000,
        currency="EUR",
        merchant_order_id="order_1001",
        metadata_order_id="order_1001",
    )


@pytest.mark.parametrize("event_type", sorted(CHECKOUT_SESSION_TYPES))
def test_checkout_session_events_parse_a_checkout_session(event_type: str) -> None:
    """Every checkout.session.* event parses its object as a CheckoutSession."""
    parsed = _parse_object(event_type, _checkout_session())

    assert parsed.type == event_type
    assert parsed.object == CheckoutSession(
        id="cs_a1b2c3d4e5",
        client_reference_id="order_1001",
        metadata_order_id="order_1001",
        payment_intent="pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        payment_status="unpaid",
        amount_total=2000,
        currency="EUR",
    )


@pytest.mark.parametrize("event_type", sorted(REFUND_TYPES))
@pytest.mark.parametrize(
    "status", ["pending", "requires_action", "succeeded", "failed", "canceled"]
)
def test_refund_events_parse_a_refund(event_type: str, status: str) -> None:
    """charge.refund.updated parses its object as a Refund, for every refund status."""
    parsed = _parse_object(event_type, _refund(status=status, currency="eur"))

    assert parsed.object == Refund(
        id="re_1Nispe2eZvKYlo2Cd31jOCgZ",
        amount=500,
        currency="EUR",
        payment_intent="pi_3PqXyZ2eZvKYlo2C1a2b3c4d",
        status=status,
    )


def test_every_in_scope_type_is_covered() -> None:
    """The three families above are exactly the in-scope event types."""
    assert PAYMENT_INTENT_TYPES | CHECKOUT_SESSION_TYPES | REFUND_TYPES == IN_SCOPE_TYPES
    assert len(IN_SCOPE_TYPES) == 9


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("payment_intent.succeeded", _payment_intent(currency="eur")),
        ("checkout.session.completed", _checkout_session(currency="eUr")),
        ("charge.refund.updated", _refund(currency="eur")),
    ],
)
def test_lower_case_currency_is_upper_cased(event_type: str, obj: dict[str, Any]) -> None:
    """Currency codes arrive in any case and are stored upper-case."""
    parsed = _parse_object(event_type, obj)
    assert isinstance(parsed.object, PaymentIntent | CheckoutSession | Refund)
    assert parsed.object.currency == "EUR"


def test_null_amount_received_is_kept_as_none() -> None:
    """A succeeded PaymentIntent with `amount_received: null` keeps None (the amount applies)."""
    parsed = _parse_object("payment_intent.succeeded", _payment_intent(amount_received=None))
    assert isinstance(parsed.object, PaymentIntent)
    assert parsed.object.amount_received is None
    assert parsed.object.amount == 2000


def test_checkout_session_optional_fields_may_be_absent() -> None:
    """A Checkout Session without links, amount or currency still parses, with None values."""
    obj = {"id": "cs_bare", "currency": "", "amount_total": None, "metadata": None}
    parsed = _parse_object("checkout.session.expired", obj)
    assert parsed.object == CheckoutSession(
        id="cs_bare",
        client_reference_id=None,
        metadata_order_id=None,
        payment_intent=None,
        payment_status=None,
        amount_total=None,
        currency=None,
    )


@pytest.mark.parametrize("currency", [None, "", "eu", "euro", "€ur", "E1R", 978, ["EUR"]])
@pytest.mark.parametrize(
    ("event_type", "factory"),
    [("payment_intent.succeeded", _payment_intent), ("charge.refund.updated", _refund)],
)
def test_bad_currency_is_invalid_object(
    event_type: str, factory: Callable[..., dict[str, Any]], currency: object
) -> None:
    """A currency that is not a three-letter code makes the object invalid."""
    with pytest.raises(InvalidObject, match="currency"):
        _parse_object(event_type, factory(currency=currency))


@pytest.mark.parametrize("currency", ["eu", "€ur", 978])
def test_bad_checkout_session_currency_is_invalid_object(currency: object) -> None:
    """A present but malformed Checkout Session currency makes the object invalid."""
    with pytest.raises(InvalidObject, match="currency"):
        _parse_object("checkout.session.completed", _checkout_session(currency=currency))


@pytest.mark.parametrize("amount", [None, -1, "2000", 20.5, True, 2**63, [2000]])
@pytest.mark.parametrize(
    ("event_type", "factory"),
    [("payment_intent.succeeded", _payment_intent), ("charge.refund.updated", _refund)],
)
def test_bad_amount_is_invalid_object(
    event_type: str, factory: Callable[..., dict[str, Any]], amount: object
) -> None:
    """A missing, negative, non-integer or oversized amount makes the object invalid."""
    with pytest.raises(InvalidObject, match="amount"):
        _parse_object(event_type, factory(amount=amount))


@pytest.mark.parametrize("amount_received", [-5, "2000", 1.5, False])
def test_bad_amount_received_is_invalid_object(amount_received: object) -> None:
    """A present `amount_received` must be a non-negative integer."""
    with pytest.raises(InvalidObject, match="amount_received"):
        _parse_object("payment_intent.succeeded", _payment_intent(amount_received=amount_received))


@pytest.mark.parametrize(
    "status", [None, "", "done", "SUCCEEDED", 1, ["succeeded"], {"status": "succeeded"}]
)
def test_bad_refund_status_is_invalid_object(status: object) -> None:
    """A refund status outside the documented set (of any JSON type) is an InvalidObject."""
    with pytest.raises(InvalidObject, match="status"):
        _parse_object("charge.refund.updated", _refund(status=status))


def test_refund_without_payment_intent_is_invalid_object() -> None:
    """A refund that names no PaymentIntent cannot be linked and is invalid."""
    with pytest.raises(InvalidObject, match="payment_intent"):
        _parse_object("charge.refund.updated", _refund(payment_intent=None))


@pytest.mark.parametrize("event_type", sorted(IN_SCOPE_TYPES))
def test_object_without_id_is_invalid_object(event_type: str) -> None:
    """Every in-scope object needs an `id`."""
    obj = _object_for(event_type)
    del obj["id"]
    with pytest.raises(InvalidObject, match="'id'"):
        _parse_object(event_type, obj)


@pytest.mark.parametrize("order_id", [42, "o\n1", "o" * 256])
def test_malformed_order_reference_is_invalid_object(order_id: object) -> None:
    """A non-string, multi-line or overlong merchant_order_id makes the object invalid."""
    with pytest.raises(InvalidObject, match="merchant_order_id"):
        _parse_object("payment_intent.succeeded", _payment_intent(merchant_order_id=order_id))


# --- properties ---------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66)
    | st.floats()
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Envelope-shaped documents whose fields are each either plausible or arbitrary: the property
# then reaches every check (and the accepting path), not just the first refusal.
ENVELOPES = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"evt_[A-Za-z0-9]{1,24}", fullmatch=True) | JSON_VALUES,
        "type": st.sampled_from(sorted(IN_SCOPE_TYPES)) | JSON_VALUES,
        "created": st.integers(min_value=1, max_value=2**63 - 1)
        | st.integers(min_value=-(2**64), max_value=2**64)
        | JSON_VALUES,
        "data": st.fixed_dictionaries({"object": st.dictionaries(st.text(), JSON_VALUES)})
        | JSON_VALUES,
    },
    optional={"livemode": JSON_VALUES},
)
OBJECTS = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["pi_1", "cs_1", "re_1", "123456789012"]) | JSON_VALUES,
        "amount": st.integers(min_value=0, max_value=10**9) | JSON_VALUES,
        "currency": st.sampled_from(["EUR", "eur", "Usd"]) | JSON_VALUES,
        "status": st.sampled_from(["pending", "succeeded", "failed", "canceled"]) | JSON_VALUES,
        "payment_intent": st.just("pi_1") | JSON_VALUES,
    },
    optional={
        "amount_received": st.none() | st.integers(min_value=0) | JSON_VALUES,
        "amount_total": st.none() | st.integers(min_value=0) | JSON_VALUES,
        "merchant_order_id": st.text(max_size=10) | JSON_VALUES,
        "client_reference_id": st.text(max_size=10) | JSON_VALUES,
        "payment_status": st.sampled_from(["paid", "unpaid"]) | JSON_VALUES,
        "metadata": st.dictionaries(st.just("order_id"), JSON_VALUES) | JSON_VALUES,
    },
)


def _parse_or_invalid(body: bytes) -> WebhookEvent | None:
    try:
        return parse_envelope(body)
    except InvalidEvent:
        return None


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_only_ever_raise_invalid_event(body: bytes) -> None:
    """For any bytes, parse_envelope returns an event or raises InvalidEvent, nothing else."""
    parsed = _parse_or_invalid(body)
    assert parsed is None or isinstance(parsed, WebhookEvent)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES | ENVELOPES)
def test_arbitrary_json_only_ever_raises_invalid_event(document: object) -> None:
    """For any JSON value, parse_envelope returns an event or raises InvalidEvent, nothing else."""
    parsed = _parse_or_invalid(json.dumps(document).encode())
    event("accepted" if parsed is not None else "rejected")
    if parsed is not None:
        assert isinstance(document, dict)
        assert parsed.event_id == document["id"]
        assert parsed.type == document["type"]
        assert parsed.created_ms > 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(IN_SCOPE_TYPES)), OBJECTS)
def test_arbitrary_objects_only_ever_raise_invalid_object(
    event_type: str, obj: dict[str, Any]
) -> None:
    """For any data.object of an in-scope event, parsing yields a typed object or InvalidObject."""
    envelope = parse_envelope(_body(_event(event_type, obj)))
    try:
        parsed = parse_payment_event(envelope)
    except InvalidObject:
        event("invalid object")
        return
    event("parsed")
    assert isinstance(parsed.object, PaymentIntent | CheckoutSession | Refund)
