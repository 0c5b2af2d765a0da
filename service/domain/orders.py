"""The order's state as a pure projection (fold) of the payment events applied to it.

The worker loads the order's registered terms and every PaymentEvent linked to it (plus the new
one), calls `project`, and stores the result. Webhooks arrive late, twice and out of order, so the
projection folds the *set* of distinct events (deduplicated by event_id) in one canonical order:
the stored state depends only on which events exist, never on how they were delivered.

Canonical order: ascending (created_ms, rank, event_id), where rank is, by event:

     0  payment_intent.created
     1  payment_intent.requires_action
     2  payment_intent.processing
     3  checkout.session.completed       payment_status != "paid" (a delayed method is under way)
     4  payment_intent.payment_failed
     5  payment_intent.canceled
     6  checkout.session.expired
     7  payment_intent.succeeded
     8  checkout.session.completed       payment_status == "paid"
     9+ charge.refund.updated            9 + refund status rank: requires_action 0, pending 1,
                                         succeeded 2, canceled 3, failed 4

Time is the truth; the rank only orders events stamped with the same millisecond, putting the
further stage of the payment's life last (so it wins), and event_id makes the order total.

Rules (one handler per event type, see _HANDLERS):
- in-flight events (requires_action, processing, payment_failed, and a checkout session completed
  but not yet paid, which means processing) move an *open* order (pending, requires_action,
  processing, payment_failed) to their status, so a customer can fail and retry; they never touch
  a paid order (progress does not go backwards) nor reopen a canceled or expired one;
- payment_intent.created resets a failed order to pending (a new attempt) and is otherwise inert;
- canceled / expired close an open order; the first close wins;
- a success whose amount and currency match the terms makes the order paid, even when canceled or
  expired (then it needs review: money arrived for an order the merchant may have released); a
  success that does not match, or a paid session without amount/currency, leaves the status alone
  and needs review; a second, different PaymentIntent succeeding needs review (paid twice);
- the latest PaymentIntent / Checkout Session id in fold order becomes the order's link;
- refunds are summarised at the end, each refund at its latest status, and count only once the
  order is paid; see `service.domain.refunds`.

Review reasons are kept once each, in fold order, and never contain the "; " that joins them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Literal

from service.domain.events import CheckoutSession, EventType, PaymentEvent, PaymentIntent, Refund
from service.domain.refunds import RefundState, refund_status_rank, summarise


class OrderStatus(StrEnum):
    """An order's status, as stored and shown."""

    PENDING = "pending"
    REQUIRES_ACTION = "requires_action"
    PROCESSING = "processing"
    PAID = "paid"
    PAYMENT_FAILED = "payment_failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


# The status as far as the payment goes; the refunded statuses are derived from `paid` at the end.
PaymentStatus = Literal[
    OrderStatus.PENDING,
    OrderStatus.REQUIRES_ACTION,
    OrderStatus.PROCESSING,
    OrderStatus.PAID,
    OrderStatus.PAYMENT_FAILED,
    OrderStatus.CANCELED,
    OrderStatus.EXPIRED,
]

# An order still waiting for its money: in-flight events may move it, in any direction.
_OPEN: Final = frozenset(
    {
        OrderStatus.PENDING,
        OrderStatus.REQUIRES_ACTION,
        OrderStatus.PROCESSING,
        OrderStatus.PAYMENT_FAILED,
    }
)

_TYPE_RANKS: Final[Mapping[str, int]] = {
    EventType.PAYMENT_INTENT_CREATED: 0,
    EventType.PAYMENT_INTENT_REQUIRES_ACTION: 1,
    EventType.PAYMENT_INTENT_PROCESSING: 2,
    EventType.CHECKOUT_SESSION_COMPLETED: 3,  # when not paid; see _SESSION_PAID_RANK
    EventType.PAYMENT_INTENT_PAYMENT_FAILED: 4,
    EventType.PAYMENT_INTENT_CANCELED: 5,
    EventType.CHECKOUT_SESSION_EXPIRED: 6,
    EventType.PAYMENT_INTENT_SUCCEEDED: 7,
}
_SESSION_PAID_RANK: Final = 8
_REFUND_RANK_BASE: Final = 9


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """What the merchant registered for the order."""

    order_id: str
    amount: int  # minor units
    currency: str  # upper-case
    payment_intent_id: str | None = None  # registered link, if any
    checkout_session_id: str | None = None


@dataclass(frozen=True, slots=True)
class OrderState:
    """The order as the events say it is."""

    status: OrderStatus
    amount_received: int
    amount_refunded: int
    payment_intent_id: str | None
    checkout_session_id: str | None
    needs_review: bool
    review_reason: str | None  # the reasons, unique, in fold order, joined with "; "
    refunds: tuple[RefundState, ...]  # sorted by refund_id


@dataclass(frozen=True, slots=True)
class _Fold:
    """The accumulator of the fold: richer than OrderState, which is derived from it at the end."""

    terms: OrderTerms
    status: PaymentStatus
    amount_received: int
    payment_intent_id: str | None
    checkout_session_id: str | None
    # Which PaymentIntent paid, to notice a second, different intent also succeeding.
    paid_by: str | None = None
    reasons: tuple[str, ...] = ()
    # The latest update of each refund, by refund id; folded in canonical order, so last wins.
    refunds: Mapping[str, Refund] = field(default_factory=dict)

    def with_reason(self, reason: str) -> _Fold:
        return self if reason in self.reasons else replace(self, reasons=(*self.reasons, reason))


@dataclass(frozen=True, slots=True)
class _Payment:
    """A reported success: who paid, how much, in what currency."""

    payment_intent_id: str | None
    amount: int
    currency: str


_Handler = Callable[[_Fold, PaymentEvent], _Fold]


def initial_state(terms: OrderTerms) -> OrderState:
    """The state of an order no event has touched yet: pending, linked as registered."""
    return _finish(_start(terms))


def project(terms: OrderTerms, events: Iterable[PaymentEvent]) -> OrderState:
    """Fold the set of distinct events (deduplicated by event_id) in a canonical order.

    Raises ValueError for an event type this projection does not know, or an event whose object
    does not fit its type: an order must not be silently projected without one of its events.
    """
    fold = _start(terms)
    for event in canonical_order(events):
        fold = _HANDLERS[event.type](fold, event)
    return _finish(fold)


def canonical_order(events: Iterable[PaymentEvent]) -> tuple[PaymentEvent, ...]:
    """The distinct events, sorted by (created_ms, rank, event_id); see the module docstring."""
    distinct: dict[str, PaymentEvent] = {}
    for event in events:
        kept = distinct.get(event.event_id)
        # Redeliveries are identical; should two bodies ever share an id, keep the same one
        # whichever arrived first, so the result still depends only on the set.
        if kept is None or _duplicate_key(event) < _duplicate_key(kept):
            distinct[event.event_id] = event
    return tuple(sorted(distinct.values(), key=_sort_key))


def _sort_key(event: PaymentEvent) -> tuple[int, int, str]:
    return (event.created_ms, _rank(event), event.event_id)


def _duplicate_key(event: PaymentEvent) -> tuple[int, int, str, str]:
    return (*_sort_key(event), repr(event))


def _rank(event: PaymentEvent) -> int:
    if event.type == EventType.CHARGE_REFUND_UPDATED:
        return _REFUND_RANK_BASE + refund_status_rank(_refund(event).status)
    if event.type == EventType.CHECKOUT_SESSION_COMPLETED and _session_paid(_session(event)):
        return _SESSION_PAID_RANK
    rank = _TYPE_RANKS.get(event.type)
    if rank is None:
        raise ValueError(f"event {event.event_id}: type {event.type!r} is not projected")
    return rank


def _start(terms: OrderTerms) -> _Fold:
    # Registered links are where the links start; events seen later replace them.
    return _Fold(
        terms=terms,
        status=OrderStatus.PENDING,
        amount_received=0,
        payment_intent_id=terms.payment_intent_id,
        checkout_session_id=terms.checkout_session_id,
    )


# --- payment handlers -------------------------------------------------------------------------


def _on_intent_created(fold: _Fold, event: PaymentEvent) -> _Fold:
    fold = _link_intent(fold, _intent(event).id)
    # A new intent starts a (new) attempt: it resets a failed order, but never undoes an attempt
    # already under way.
    if fold.status in (OrderStatus.PENDING, OrderStatus.PAYMENT_FAILED):
        return replace(fold, status=OrderStatus.PENDING)
    return fold


def _in_flight(status: PaymentStatus) -> _Handler:
    """Handler for requires_action / processing / payment_failed of a PaymentIntent."""

    def handler(fold: _Fold, event: PaymentEvent) -> _Fold:
        fold = _link_intent(fold, _intent(event).id)
        # Open orders follow the latest attempt (fail, then retry). A paid order must not go
        # backwards, and a released (canceled/expired) one is not reopened by a mere attempt.
        return replace(fold, status=status) if fold.status in _OPEN else fold

    return handler


def _on_intent_canceled(fold: _Fold, event: PaymentEvent) -> _Fold:
    return _close(_link_intent(fold, _intent(event).id), OrderStatus.CANCELED)


def _on_session_expired(fold: _Fold, event: PaymentEvent) -> _Fold:
    return _close(_link_session(fold, _session(event)), OrderStatus.EXPIRED)


def _close(fold: _Fold, status: PaymentStatus) -> _Fold:
    # Only an order without its money can be released; a second close keeps the first.
    return replace(fold, status=status) if fold.status in _OPEN else fold


def _on_intent_succeeded(fold: _Fold, event: PaymentEvent) -> _Fold:
    intent = _intent(event)
    # WooshPay may leave amount_received null on a succeeded intent: then the full amount arrived.
    received = intent.amount if intent.amount_received is None else intent.amount_received
    return _settle(_link_intent(fold, intent.id), _Payment(intent.id, received, intent.currency))


def _on_session_completed(fold: _Fold, event: PaymentEvent) -> _Fold:
    session = _session(event)
    fold = _link_session(fold, session)
    if _session_paid(session):
        return _settle_session(fold, session)
    # Delayed methods (SOFORT) complete the checkout before the money moves: the payment is under
    # way. After a failure, a later completion is the customer's retry going through.
    return replace(fold, status=OrderStatus.PROCESSING) if fold.status in _OPEN else fold


def _settle_session(fold: _Fold, session: CheckoutSession) -> _Fold:
    if session.amount_total is None or session.currency is None:
        # We cannot tell whether the right money arrived, so we must not say it did.
        return fold.with_reason(
            f"unverifiable_payment: checkout session {session.id} is paid"
            " without amount_total or currency"
        )
    payment = _Payment(session.payment_intent, session.amount_total, session.currency)
    return _settle(fold, payment)


def _settle(fold: _Fold, payment: _Payment) -> _Fold:
    """Apply a reported success: paid if it matches the terms, otherwise flagged for review."""
    mismatch = _mismatch(fold.terms, payment)
    if mismatch is not None:
        # Wrong money is not payment of this order: the status stays, so neither refunds nor
        # expiry treat the order as paid.
        return fold.with_reason(mismatch)
    if fold.status == OrderStatus.PAID:
        return _paid_again(fold, payment)
    if fold.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED):
        fold = fold.with_reason(
            f"paid_after_{fold.status}: money arrived for an order that was {fold.status},"
            " which the merchant may have released"
        )
    return replace(
        fold,
        status=OrderStatus.PAID,
        amount_received=payment.amount,
        paid_by=payment.payment_intent_id,
    )


def _paid_again(fold: _Fold, payment: _Payment) -> _Fold:
    # The intent's own success and the paid checkout session report the same payment; a different
    # intent succeeding as well means the customer paid twice.
    if fold.paid_by is None or payment.payment_intent_id in (None, fold.paid_by):
        return replace(fold, paid_by=fold.paid_by or payment.payment_intent_id)
    return fold.with_reason(
        f"duplicate_payment: {payment.payment_intent_id} succeeded after {fold.paid_by}"
        " had paid the order"
    )


def _mismatch(terms: OrderTerms, payment: _Payment) -> str | None:
    expected = f"expected {terms.amount} {terms.currency.upper()}"
    received = f"received {payment.amount} {payment.currency.upper()}"
    if payment.currency.upper() != terms.currency.upper():
        return f"currency_mismatch: {expected}, {received}"
    if payment.amount != terms.amount:
        return f"amount_mismatch: {expected}, {received}"
    return None


def _on_refund_updated(fold: _Fold, event: PaymentEvent) -> _Fold:
    refund = _refund(event)
    # Canonical order puts a refund's updates in time order (terminal statuses last on a tie), so
    # the update folded last is its latest status.
    return replace(fold, refunds={**fold.refunds, refund.id: refund})


_HANDLERS: Final[Mapping[str, _Handler]] = {
    EventType.PAYMENT_INTENT_CREATED: _on_intent_created,
    EventType.PAYMENT_INTENT_REQUIRES_ACTION: _in_flight(OrderStatus.REQUIRES_ACTION),
    EventType.PAYMENT_INTENT_PROCESSING: _in_flight(OrderStatus.PROCESSING),
    EventType.PAYMENT_INTENT_PAYMENT_FAILED: _in_flight(OrderStatus.PAYMENT_FAILED),
    EventType.PAYMENT_INTENT_CANCELED: _on_intent_canceled,
    EventType.PAYMENT_INTENT_SUCCEEDED: _on_intent_succeeded,
    EventType.CHECKOUT_SESSION_COMPLETED: _on_session_completed,
    EventType.CHECKOUT_SESSION_EXPIRED: _on_session_expired,
    EventType.CHARGE_REFUND_UPDATED: _on_refund_updated,
}


# --- links and object access ------------------------------------------------------------------


def _link_intent(fold: _Fold, payment_intent_id: str | None) -> _Fold:
    # The latest intent seen in fold order is the order's intent; no intent named keeps the link.
    if payment_intent_id is None:
        return fold
    return replace(fold, payment_intent_id=payment_intent_id)


def _link_session(fold: _Fold, session: CheckoutSession) -> _Fold:
    fold = _link_intent(fold, session.payment_intent)
    return replace(fold, checkout_session_id=session.id)


def _intent(event: PaymentEvent) -> PaymentIntent:
    if not isinstance(event.object, PaymentIntent):
        raise ValueError(f"event {event.event_id}: {event.type} does not carry a PaymentIntent")
    return event.object


def _session(event: PaymentEvent) -> CheckoutSession:
    if not isinstance(event.object, CheckoutSession):
        raise ValueError(f"event {event.event_id}: {event.type} does not carry a CheckoutSession")
    return event.object


def _session_paid(session: CheckoutSession) -> bool:
    return session.payment_status == "paid"


def _refund(event: PaymentEvent) -> Refund:
    if not isinstance(event.object, Refund):
        raise ValueError(f"event {event.event_id}: {event.type} does not carry a Refund")
    return event.object


# --- the resulting state ----------------------------------------------------------------------


def _finish(fold: _Fold) -> OrderState:
    """Derive the order's state: refunds count only once the order is paid."""
    currency = fold.terms.currency.upper()
    totals = summarise(fold.refunds, currency)
    for foreign in totals.foreign:
        fold = fold.with_reason(
            f"refund_currency_mismatch: refund {foreign.id} is in {foreign.currency.upper()},"
            f" the order in {currency}"
        )
    status: OrderStatus = fold.status
    refunded = 0
    if fold.status == OrderStatus.PAID:
        # A refund seen before the payment is kept, and counts from the moment the order is paid.
        refunded = totals.succeeded
        status = _refund_status(refunded, fold.amount_received)
        if refunded > fold.amount_received:
            fold = fold.with_reason(
                f"refund_exceeds_received: refunded {refunded} {currency},"
                f" received {fold.amount_received} {currency}"
            )
    return OrderState(
        status=status,
        amount_received=fold.amount_received,
        amount_refunded=refunded,
        payment_intent_id=fold.payment_intent_id,
        checkout_session_id=fold.checkout_session_id,
        needs_review=bool(fold.reasons),
        review_reason="; ".join(fold.reasons) if fold.reasons else None,
        refunds=totals.refunds,
    )


def _refund_status(refunded: int, received: int) -> OrderStatus:
    if refunded <= 0:
        return OrderStatus.PAID
    return OrderStatus.PARTIALLY_REFUNDED if refunded < received else OrderStatus.REFUNDED
