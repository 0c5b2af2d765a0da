"""Unit tests for the domain's shared vocabulary: statuses, event types and currency codes, each
defined once and used by the parser, the sender and the command line alike."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from service.cli.ops import orders, orders_list
from service.devtools.sender import EventOptions, build_event
from service.domain.currency import normalise_currency
from service.domain.events import (
    CHECKOUT_SESSION_TYPES,
    IN_SCOPE_TYPES,
    PAYMENT_INTENT_TYPES,
    REFUND_STATUSES,
    REFUND_TYPES,
    EventType,
)
from service.domain.orders import OrderStatus
from service.wooshpay.events import InvalidObject, WebhookEvent, parse_payment_event

CURRENCY_MESSAGE = "currency must be a three-letter code, e.g. EUR"
BAD_CURRENCIES: list[Any] = [None, "", "eu", "euro", "€ur", "ÉUR", "E1R", "EU ", 978, ["EUR"]]


def test_order_status_values_are_the_stored_strings() -> None:
    """OrderStatus keeps the exact strings the order store holds and the command line offers."""
    assert [status.value for status in OrderStatus] == [
        "pending",
        "requires_action",
        "processing",
        "paid",
        "payment_failed",
        "canceled",
        "expired",
        "partially_refunded",
        "refunded",
    ]


def test_cli_offers_order_statuses_as_plain_strings() -> None:
    """`orders list --status` offers the status values, not the enum's member names."""
    [status_option] = [param for param in orders_list.params if param.name == "status"]
    assert isinstance(status_option.type, click.Choice)
    choices = list(status_option.type.choices)
    assert choices == [status.value for status in OrderStatus]
    assert all(type(choice) is str for choice in choices)


def test_a_plain_string_finds_its_event_type() -> None:
    """A type read from a webhook body (a plain str) is found in the set for its object."""
    assert "payment_intent.succeeded" in PAYMENT_INTENT_TYPES
    assert "checkout.session.expired" in CHECKOUT_SESSION_TYPES
    assert "charge.refund.updated" in REFUND_TYPES
    assert "charge.refund.updated" not in PAYMENT_INTENT_TYPES
    assert "customer.created" not in IN_SCOPE_TYPES
    assert frozenset(EventType) == IN_SCOPE_TYPES


def test_a_plain_string_finds_its_refund_status() -> None:
    """A refund status read from a webhook body is found among the five known statuses."""
    assert {"pending", "requires_action", "succeeded", "failed", "canceled"} == REFUND_STATUSES
    assert "refunded" not in REFUND_STATUSES


@pytest.mark.parametrize(("text", "code"), [("EUR", "EUR"), ("eur", "EUR"), ("uSd", "USD")])
def test_currency_is_upper_cased(text: str, code: str) -> None:
    """Three ASCII letters in any case are a currency code, kept upper-case."""
    assert normalise_currency(text) == code


@pytest.mark.parametrize("value", BAD_CURRENCIES)
def test_anything_else_is_not_a_currency(value: object) -> None:
    """Anything but three ASCII letters raises ValueError with the one currency message."""
    with pytest.raises(ValueError, match=f"^{CURRENCY_MESSAGE}$"):
        normalise_currency(value)


def test_parser_reports_a_bad_currency_with_the_same_message() -> None:
    """An event object with a bad currency is an InvalidObject carrying the currency message."""
    event = WebhookEvent(
        event_id="evt_1",
        type="payment_intent.succeeded",
        created_ms=1,
        livemode=False,
        object={"id": "pi_1", "amount": 100, "currency": "euro"},
    )
    with pytest.raises(InvalidObject, match=f"^{CURRENCY_MESSAGE}$"):
        parse_payment_event(event)


def test_sender_reports_a_bad_currency_with_the_same_message() -> None:
    """`send` refuses a bad currency with the currency message before building anything."""
    with pytest.raises(ValueError, match=f"^{CURRENCY_MESSAGE}$"):
        build_event("payment_intent.succeeded", EventOptions(currency="EU1"), now_ms=1)


def test_cli_reports_a_bad_currency_with_the_same_message() -> None:
    """`orders add --currency` refuses a bad code with the currency message (usage error, 2)."""
    result = CliRunner().invoke(orders, ["add", "o1", "--amount", "100", "--currency", "EURO"])
    assert result.exit_code == 2
    assert CURRENCY_MESSAGE in result.output
