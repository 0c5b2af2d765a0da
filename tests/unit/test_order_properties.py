"""Property tests: realistic SOFORT flows project the same whatever the delivery, and correctly."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import OrderState, OrderStatus, OrderTerms, RefundState, project
from service.domain.events import CheckoutSession, PaymentEvent, PaymentIntent, Refund

ORDER_ID: Final = "ord_1"
PI: Final = "pi_1"
CS: Final = "cs_1"
AMOUNT: Final = 2000
TERMS: Final = OrderTerms(order_id=ORDER_ID, amount=AMOUNT, currency="EUR")

PROPERTY_SETTINGS: Final = settings(max_examples=200, deadline=None)

# How the last attempt ends.
OUTCOMES: Final = ("succeeded", "payment_failed", "canceled", "processing")
# How the checkout session takes part: not at all, SOFORT (completed unpaid before the money
# moves), completed paid after the success, or expired at the end of the last attempt.
CHECKOUT_MODES: Final = ("none", "sofort", "paid", "expired")
# How each refund's life ends; `succeeded_then_failed` is a bank sending the money back.
REFUND_ENDINGS: Final = ("pending", "succeeded", "failed", "canceled", "succeeded_then_failed")
PAID_FAMILY: Final = frozenset({"paid", "partially_refunded", "refunded"})


@dataclass(frozen=True)
class PlannedRefund:
    refund_id: str
    amount: int
    ending: str

    @property
    def final_status(self) -> str:
        return "failed" if self.ending == "succeeded_then_failed" else self.ending


@dataclass
class Flow:
    """One order's events in true (time) order, and the choices they were generated from."""

    outcome: str
    checkout: str
    mismatch: str | None  # None, "amount" or "currency"; only for a succeeded outcome
    now: int
    events: list[PaymentEvent] = field(default_factory=list)
    refunds: list[PlannedRefund] = field(default_factory=list)
    success_ms: int | None = None

    def tick(self, draw: st.DrawFn) -> int:
        """A timestamp strictly after every earlier one, so true order is time order."""
        self.now += draw(st.integers(min_value=1, max_value=90_000))
        return self.now


# --- event factories ----------------------------------------------------------------------------


def intent(
    kind: str,
    at: int,
    *,
    amount: int = AMOUNT,
    received: int | None = 0,
    currency: str = "EUR",
    prefix: str = "evt",
) -> PaymentEvent:
    obj = PaymentIntent(PI, amount, received, currency, ORDER_ID, None)
    return PaymentEvent(f"{prefix}_{at}", f"payment_intent.{kind}", at, obj)


def session(
    kind: str, at: int, *, paid: bool, amount: int = AMOUNT, currency: str = "EUR"
) -> PaymentEvent:
    status = "paid" if paid else "unpaid"
    obj = CheckoutSession(CS, ORDER_ID, None, PI, status, amount, currency)
    return PaymentEvent(f"evt_{at}", f"checkout.session.{kind}", at, obj)


def refund_update(planned: PlannedRefund, status: str, at: int) -> PaymentEvent:
    obj = Refund(planned.refund_id, planned.amount, "EUR", PI, status)
    return PaymentEvent(f"evt_{at}", "charge.refund.updated", at, obj)


# --- flow generation ----------------------------------------------------------------------------


def _failed_attempts(draw: st.DrawFn, flow: Flow) -> None:
    """Zero to two SOFORT attempts that the bank refuses: redirect, maybe processing, failed."""
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        flow.events.append(intent("requires_action", flow.tick(draw)))
        if draw(st.booleans()):
            flow.events.append(intent("processing", flow.tick(draw)))
        flow.events.append(intent("payment_failed", flow.tick(draw)))


def _last_attempt(draw: st.DrawFn, flow: Flow) -> None:
    """The last attempt: redirect, (session completed unpaid), processing, then its outcome."""
    flow.events.append(intent("requires_action", flow.tick(draw)))
    if flow.checkout == "sofort":
        flow.events.append(session("completed", flow.tick(draw), paid=False))
    flow.events.append(intent("processing", flow.tick(draw)))
    if flow.outcome == "succeeded":
        _success(draw, flow)
        return
    if flow.outcome != "processing":
        flow.events.append(intent(flow.outcome, flow.tick(draw)))
    if flow.checkout == "expired":
        flow.events.append(session("expired", flow.tick(draw), paid=False))


def _success(draw: st.DrawFn, flow: Flow) -> None:
    """The money arrives (after an expiry, in `expired` mode), occasionally the wrong money."""
    if flow.checkout == "expired":
        flow.events.append(session("expired", flow.tick(draw), paid=False))
    amount = AMOUNT - 500 if flow.mismatch == "amount" else AMOUNT
    currency = "USD" if flow.mismatch == "currency" else draw(st.sampled_from(["EUR", "eur"]))
    received = None if draw(st.booleans()) else amount
    flow.success_ms = flow.tick(draw)
    flow.events.append(
        intent("succeeded", flow.success_ms, amount=amount, received=received, currency=currency)
    )
    if flow.checkout == "paid":
        paid_at = flow.tick(draw)
        flow.events.append(
            session("completed", paid_at, paid=True, amount=amount, currency=currency)
        )


def _refunds(draw: st.DrawFn, flow: Flow) -> None:
    """Up to four partial refunds, each going through its own status updates."""
    for index in range(draw(st.integers(min_value=0, max_value=4))):
        planned = PlannedRefund(
            refund_id=f"re_{index}",
            amount=draw(st.integers(min_value=1, max_value=900)),
            ending=draw(st.sampled_from(REFUND_ENDINGS)),
        )
        flow.refunds.append(planned)
        statuses = ["requires_action", "pending"] if draw(st.booleans()) else ["pending"]
        if planned.ending == "succeeded_then_failed":
            statuses += ["succeeded", "failed"]
        elif planned.ending != "pending":
            statuses.append(planned.ending)
        flow.events.extend(refund_update(planned, status, flow.tick(draw)) for status in statuses)


@st.composite
def sofort_flows(
    draw: st.DrawFn, outcomes: tuple[str, ...] = OUTCOMES, *, allow_mismatch: bool = True
) -> Flow:
    """A SOFORT payment for one order: failed attempts, a last attempt, maybe refunds."""
    outcome = draw(st.sampled_from(outcomes))
    checkout = draw(st.sampled_from(CHECKOUT_MODES))
    if checkout == "paid" and outcome != "succeeded":
        checkout = "none"  # only a success completes a session as paid
    mismatch = None
    if outcome == "succeeded" and allow_mismatch:
        # About one flow in five pays the wrong amount or currency.
        mismatch = draw(st.sampled_from(["amount", "currency", *[None] * 8]))
    start = draw(st.integers(min_value=1_600_000_000_000, max_value=1_700_000_000_000))
    flow = Flow(outcome, checkout, mismatch, now=start)
    flow.events.append(intent("created", flow.tick(draw)))
    _failed_attempts(draw, flow)
    _last_attempt(draw, flow)
    if outcome == "succeeded":
        _refunds(draw, flow)
    return flow


# --- the independent expectation ----------------------------------------------------------------

UNPAID_STATUS: Final[dict[str, str]] = {
    "payment_failed": "payment_failed",
    "canceled": "canceled",
    "processing": "processing",
}


def expected_state(flow: Flow) -> OrderState:
    """What the flow should come to, worked out from its choices rather than by folding events.

    Review reasons are compared by code (the text before ':'), in fold order.
    """
    refunds = tuple(
        RefundState(r.refund_id, r.amount, r.final_status)
        for r in sorted(flow.refunds, key=lambda r: r.refund_id)
    )
    reasons: list[str] = []
    status: str
    received = refunded = 0
    if flow.outcome == "succeeded" and flow.mismatch is None:
        received = AMOUNT
        refunded = sum(r.amount for r in refunds if r.status == "succeeded")
        if flow.checkout == "expired":
            reasons.append("paid_after_expired")
        if refunded > AMOUNT:
            reasons.append("refund_exceeds_received")
        status = "paid" if refunded == 0 else "partially_refunded"
        status = "refunded" if refunded >= AMOUNT else status
    elif flow.outcome == "succeeded":
        reasons.append(f"{flow.mismatch}_mismatch")
        status = "expired" if flow.checkout == "expired" else "processing"
    elif flow.checkout == "expired" and flow.outcome != "canceled":
        status = "expired"  # canceled first stays canceled: the first release wins
    else:
        status = UNPAID_STATUS[flow.outcome]
    return OrderState(
        status=OrderStatus(status),
        amount_received=received,
        amount_refunded=refunded,
        payment_intent_id=PI,
        checkout_session_id=None if flow.checkout == "none" else CS,
        needs_review=bool(reasons),
        review_reason="; ".join(reasons) or None,
        refunds=refunds,
    )


def with_reason_codes(state: OrderState) -> OrderState:
    """The state with each review reason cut to its code (the text before ':')."""
    if state.review_reason is None:
        return state
    codes = [part.split(":", 1)[0] for part in state.review_reason.split("; ")]
    return replace(state, review_reason="; ".join(codes))


# --- properties ---------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(data=st.data())
def test_any_arrival_order_with_duplicates_gives_the_true_order_state(data: st.DataObject) -> None:
    """Every permutation of a flow's events, with random redeliveries, projects like true order."""
    flow = data.draw(sofort_flows(), label="flow")
    duplicates = data.draw(st.lists(st.sampled_from(flow.events), max_size=len(flow.events)))
    arrival = data.draw(st.permutations([*flow.events, *duplicates]), label="arrival")
    assert project(TERMS, arrival) == project(TERMS, flow.events)


@PROPERTY_SETTINGS
@given(flow=sofort_flows())
def test_true_order_state_matches_the_expected_outcome(flow: Flow) -> None:
    """A flow's true-order state is the one its choices call for."""
    assert with_reason_codes(project(TERMS, flow.events)) == expected_state(flow)


@PROPERTY_SETTINGS
@given(flow=sofort_flows())
def test_paid_never_goes_back_as_events_arrive_in_true_order(flow: Flow) -> None:
    """Once a prefix of the flow is paid, no later prefix is anything but paid or refunded."""
    statuses = [project(TERMS, flow.events[: n + 1]).status for n in range(len(flow.events))]
    first_paid = next((n for n, s in enumerate(statuses) if s in PAID_FAMILY), len(statuses))
    assert all(s in PAID_FAMILY for s in statuses[first_paid:])


@PROPERTY_SETTINGS
@given(flow=sofort_flows(outcomes=("succeeded",), allow_mismatch=False), data=st.data())
def test_stale_in_flight_events_do_not_change_a_paid_flow(flow: Flow, data: st.DataObject) -> None:
    """Late created/redirect/processing/failed events stamped before the success change nothing."""
    # Only the right money: a wrong payment leaves the order open, where in-flight events count.
    assert flow.success_ms is not None
    first_ms = flow.events[0].created_ms
    stale = data.draw(
        st.lists(
            st.builds(
                lambda kind, at: intent(kind, at, prefix="evt_stale"),
                st.sampled_from(["created", "requires_action", "processing", "payment_failed"]),
                st.integers(min_value=first_ms, max_value=flow.success_ms),
            ),
            min_size=1,
            max_size=5,
            unique_by=lambda e: e.event_id,
        ),
        label="stale",
    )
    assert project(TERMS, [*flow.events, *stale]) == project(TERMS, flow.events)
