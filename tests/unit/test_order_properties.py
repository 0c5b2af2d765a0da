"""Property tests: realistic SOFORT flows project the same whatever the delivery, and correctly."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import OrderState, OrderStatus, OrderTerms, RefundState, project
from service.events import CheckoutSession, PaymentEvent, PaymentIntent, Refund

ORDER_ID = "ord_1"
PI = "pi_1"
CS = "cs_1"
AMOUNT = 2000
TERMS = OrderTerms(order_id=ORDER_ID, amount=AMOUNT, currency="EUR")

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

OUTCOMES = ("succeeded", "payment_failed", "canceled", "processing")
# How the checkout session takes part: not at all, SOFORT (completed unpaid before the money
# moves), completed paid after the success, or expired at the end of the last attempt.
CHECKOUT_MODES = ("none", "sofort", "paid", "expired")
# How each refund's life ends; `succeeded_then_failed` is a bank returning the money.
REFUND_ENDINGS = ("pending", "succeeded", "failed", "canceled", "succeeded_then_failed")


@dataclass(frozen=True)
class PlannedRefund:
    refund_id: str
    amount: int
    ending: str


@dataclass(frozen=True)
class Flow:
    """One order's events in true order, and the choices they were generated from."""

    events: tuple[PaymentEvent, ...]
    outcome: str
    checkout: str
    mismatch: str | None  # None, "amount" or "currency"
    refunds: tuple[PlannedRefund, ...]
    success_ms: int | None


class Clock:
    """Hands out strictly increasing timestamps, so the true order is the time order."""

    def __init__(self, start: int) -> None:
        self.now = start

    def tick(self, draw: st.DrawFn) -> int:
        self.now += draw(st.integers(min_value=1, max_value=90_000))
        return self.now


def _intent(kind: str, at: int, amount: int = AMOUNT, received: int | None = 0, currency: str = "EUR") -> PaymentEvent:
    obj = PaymentIntent(PI, amount, received, currency, ORDER_ID, None)
    return PaymentEvent(f"evt_{at}", f"payment_intent.{kind}", at, obj)


def _session(kind: str, at: int, *, paid: bool, amount: int = AMOUNT, currency: str = "EUR") -> PaymentEvent:
    obj = CheckoutSession(CS, ORDER_ID, None, PI, "paid" if paid else "unpaid", amount, currency)
    return PaymentEvent(f"evt_{at}", f"checkout.session.{kind}", at, obj)


def _refund(planned: PlannedRefund, status: str, at: int) -> PaymentEvent:
    obj = Refund(planned.refund_id, planned.amount, "EUR", PI, status)
    return PaymentEvent(f"evt_{at}", "charge.refund.updated", at, obj)


def _refund_statuses(draw: st.DrawFn, ending: str) -> list[str]:
    """The status updates one refund goes through, in time order."""
    start = ["requires_action", "pending"] if draw(st.booleans()) else ["pending"]
    if ending == "pending":
        return start
    if ending == "succeeded_then_failed":
        return [*start, "succeeded", "failed"]
    return [*start, ending]


@st.composite
def sofort_flows(draw: st.DrawFn, outcomes: tuple[str, ...] = OUTCOMES) -> Flow:
    """A SOFORT payment for one order: failed attempts, a last attempt, maybe refunds."""
    clock = Clock(draw(st.integers(min_value=1_600_000_000_000, max_value=1_700_000_000_000)))
    outcome = draw(st.sampled_from(outcomes))
    checkout = draw(st.sampled_from(CHECKOUT_MODES))
    if checkout == "paid" and outcome != "succeeded":
        checkout = "none"  # a session is only completed-paid by a success
    events = [_intent("created", clock.tick(draw))]
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        events.append(_intent("requires_action", clock.tick(draw)))
        if draw(st.booleans()):
            events.append(_intent("processing", clock.tick(draw)))
        events.append(_intent("payment_failed", clock.tick(draw)))
    events.append(_intent("requires_action", clock.tick(draw)))
    if checkout == "sofort":
        events.append(_session("completed", clock.tick(draw), paid=False))
    events.append(_intent("processing", clock.tick(draw)))
    if checkout == "expired":
        events.append(_session("expired", clock.tick(draw), paid=False))

    mismatch = draw(st.sampled_from(["amount", "currency", *[None] * 8]))
    success_ms = None
    if outcome == "succeeded":
        success_ms = clock.tick(draw)
        amount = AMOUNT - 500 if mismatch == "amount" else AMOUNT
        currency = "USD" if mismatch == "currency" else draw(st.sampled_from(["EUR", "eur"]))
        received = None if draw(st.booleans()) else amount
        events.append(_intent("succeeded", success_ms, amount, received, currency))
        if checkout == "paid":
            events.append(_session("completed", clock.tick(draw), paid=True, amount=amount, currency=currency))
    elif outcome != "processing":
        # The last attempt fails or is canceled; an expiry above already released the order.
        events.insert(len(events) - (checkout == "expired"), _intent(outcome, clock.tick(draw)))
    else:
        mismatch = None

    refunds: list[PlannedRefund] = []
    if outcome == "succeeded":
        count = draw(st.integers(min_value=0, max_value=4))
        for index in range(count):
            planned = PlannedRefund(
                refund_id=f"re_{index}",
                amount=draw(st.integers(min_value=1, max_value=900)),
                ending=draw(st.sampled_from(REFUND_ENDINGS)),
            )
            refunds.append(planned)
            for status in _refund_statuses(draw, planned.ending):
                events.append(_refund(planned, status, clock.tick(draw)))
    if outcome != "succeeded":
        mismatch = None
    return Flow(tuple(events), outcome, checkout, mismatch, tuple(refunds), success_ms)


def _retimed(events: list[PaymentEvent]) -> list[PaymentEvent]:
    """Events in list order re-stamped with strictly increasing timestamps (unused helper guard)."""
    return events


def expected_state(flow: Flow) -> OrderState:
    """What the flow should come to, worked out from the choices, not by folding events."""
    reasons: list[str] = []
    refunds = tuple(
        RefundState(r.refund_id, r.amount, "failed" if r.ending == "succeeded_then_failed" else r.ending)
        for r in sorted(flow.refunds, key=lambda r: r.refund_id)
    )
    status: OrderStatus
    received = refunded = 0
    if flow.outcome == "succeeded" and flow.mismatch is None:
        received = AMOUNT
        refunded = sum(r.amount for r in refunds if r.status == "succeeded")
        if flow.checkout == "expired":
            reasons.append("paid_after_expired")
        if refunded > AMOUNT:
            reasons.append("refund_exceeds_received")
        status = "paid" if refunded == 0 else "partially_refunded" if refunded < AMOUNT else "refunded"
    elif flow.outcome == "succeeded":
        reasons.append(f"{flow.mismatch}_mismatch")
        status = "expired" if flow.checkout == "expired" else "processing"
    elif flow.checkout == "expired" and flow.outcome != "canceled":
        status = "expired"
    else:
        status = {"payment_failed": "payment_failed", "canceled": "canceled"}.get(
            flow.outcome, "processing"
        )  # type: ignore[assignment]
    return OrderState(
        status=status,
        amount_received=received,
        amount_refunded=refunded,
        payment_intent_id=PI,
        checkout_session_id=None if flow.checkout == "none" else CS,
        needs_review=bool(reasons),
        review_reason="; ".join(reasons) or None,
        refunds=refunds,
    )


def reason_codes(state: OrderState) -> OrderState:
    """The state with each review reason cut to its code (the text before ':')."""
    if state.review_reason is None:
        return state
    codes = "; ".join(part.split(":", 1)[0] for part in state.review_reason.split("; "))
    return OrderState(
        status=state.status,
        amount_received=state.amount_received,
        amount_refunded=state.amount_refunded,
        payment_intent_id=state.payment_intent_id,
        checkout_session_id=state.checkout_session_id,
        needs_review=state.needs_review,
        review_reason=codes,
        refunds=state.refunds,
    )
