"""The payment events the order projection folds: their types, the objects they carry, and the
statuses a refund goes through.

These are trusted, typed values. Building them from an untrusted webhook body is the WooshPay
parser's job (`service.wooshpay.events`); the domain never sees JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class EventType(StrEnum):
    """The WooshPay event types the service reconciles; its webhook endpoint subscribes to these."""

    PAYMENT_INTENT_CREATED = "payment_intent.created"
    PAYMENT_INTENT_REQUIRES_ACTION = "payment_intent.requires_action"
    PAYMENT_INTENT_PROCESSING = "payment_intent.processing"
    PAYMENT_INTENT_SUCCEEDED = "payment_intent.succeeded"
    PAYMENT_INTENT_PAYMENT_FAILED = "payment_intent.payment_failed"
    PAYMENT_INTENT_CANCELED = "payment_intent.canceled"
    CHECKOUT_SESSION_COMPLETED = "checkout.session.completed"
    CHECKOUT_SESSION_EXPIRED = "checkout.session.expired"
    CHARGE_REFUND_UPDATED = "charge.refund.updated"


# The types by the object they carry. A StrEnum member hashes and compares as its value, so a
# plain string from a webhook body can be looked up in these sets.
PAYMENT_INTENT_TYPES: Final = frozenset(
    {
        EventType.PAYMENT_INTENT_CREATED,
        EventType.PAYMENT_INTENT_REQUIRES_ACTION,
        EventType.PAYMENT_INTENT_PROCESSING,
        EventType.PAYMENT_INTENT_SUCCEEDED,
        EventType.PAYMENT_INTENT_PAYMENT_FAILED,
        EventType.PAYMENT_INTENT_CANCELED,
    }
)
CHECKOUT_SESSION_TYPES: Final = frozenset(
    {EventType.CHECKOUT_SESSION_COMPLETED, EventType.CHECKOUT_SESSION_EXPIRED}
)
REFUND_TYPES: Final = frozenset({EventType.CHARGE_REFUND_UPDATED})
IN_SCOPE_TYPES: Final = frozenset(EventType)


class RefundStatus(StrEnum):
    """The statuses a WooshPay Refund reports in `charge.refund.updated`."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


REFUND_STATUSES: Final = frozenset(RefundStatus)


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    amount: int
    amount_received: int | None
    currency: str  # upper-case
    merchant_order_id: str | None
    metadata_order_id: str | None


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    id: str
    client_reference_id: str | None
    metadata_order_id: str | None
    payment_intent: str | None
    payment_status: str | None
    amount_total: int | None
    currency: str | None  # upper-case


@dataclass(frozen=True, slots=True)
class Refund:
    id: str
    amount: int
    currency: str  # upper-case
    payment_intent: str
    status: str  # one of RefundStatus


PaymentObject = PaymentIntent | CheckoutSession | Refund


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """An in-scope event with its object parsed: what the reconciler works on."""

    event_id: str
    type: str
    created_ms: int
    object: PaymentObject
