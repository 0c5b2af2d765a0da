"""Table-driven tests of the order projection: each rule of the payment contract, one by one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from service.domain import OrderState, OrderStatus, OrderTerms, RefundState, initial_state, project
from service.domain.events import (
    IN_SCOPE_TYPES,
    CheckoutSession,
    PaymentEvent,
    PaymentIntent,
    Refund,
)
from service.domain.orders import canonical_order

ORDER_ID = "ord_1"
PI = "pi_1"
CS = "cs_1"
TERMS = OrderTerms(order_id=ORDER_ID, amount=2000, currency="EUR")

# --- event factories ----------------------------------------------------------------------------


def intent_event(
    kind: str,
    at: int,
    *,
    pi: str = PI,
    amount: int = 2000,
    received: int | None = 0,
    currency: str = "EUR",
    event_id: str | None = None,
) -> PaymentEvent:
    obj = PaymentIntent(
        id=pi,
        amount=amount,
        amount_received=received,
        currency=currency,
        merchant_order_id=ORDER_ID,
        metadata_order_id=None,
    )
    return PaymentEvent(event_id or f"evt_{kind}_{pi}_{at}", f"payment_intent.{kind}", at, obj)


def created(at: int, *, pi: str = PI) -> PaymentEvent:
    return intent_event("created", at, pi=pi)


def requires_action(at: int, *, pi: str = PI) -> PaymentEvent:
    return intent_event("requires_action", at, pi=pi)


def processing(at: int, *, pi: str = PI) -> PaymentEvent:
    return intent_event("processing", at, pi=pi)


def failed(at: int, *, pi: str = PI) -> PaymentEvent:
    return intent_event("payment_failed", at, pi=pi)


def canceled(at: int, *, pi: str = PI) -> PaymentEvent:
    return intent_event("canceled", at, pi=pi)


def succeeded(
    at: int,
    *,
    pi: str = PI,
    amount: int = 2000,
    received: int | None = None,
    currency: str = "EUR",
    event_id: str | None = None,
) -> PaymentEvent:
    """A succeeded intent; amount_received defaults to the full amount."""
    return intent_event(
        "succeeded",
        at,
        pi=pi,
        amount=amount,
        received=amount if received is None else received,
        currency=currency,
        event_id=event_id,
    )


def session_completed(
    at: int,
    *,
    paid: bool,
    cs: str = CS,
    pi: str | None = PI,
    amount_total: int | None = 2000,
    currency: str | None = "EUR",
) -> PaymentEvent:
    obj = CheckoutSession(
        id=cs,
        client_reference_id=ORDER_ID,
        metadata_order_id=None,
        payment_intent=pi,
        payment_status="paid" if paid else "unpaid",
        amount_total=amount_total,
        currency=currency,
    )
    return PaymentEvent(f"evt_cs_completed_{cs}_{at}", "checkout.session.completed", at, obj)


def session_expired(at: int, *, cs: str = CS) -> PaymentEvent:
    obj = CheckoutSession(
        id=cs,
        client_reference_id=ORDER_ID,
        metadata_order_id=None,
        payment_intent=None,
        payment_status="unpaid",
        amount_total=2000,
        currency="EUR",
    )
    return PaymentEvent(f"evt_cs_expired_{cs}_{at}", "checkout.session.expired", at, obj)


def refund(
    refund_id: str, status: str, at: int, *, amount: int = 500, currency: str = "EUR"
) -> PaymentEvent:
    obj = Refund(id=refund_id, amount=amount, currency=currency, payment_intent=PI, status=status)
    return PaymentEvent(f"evt_{refund_id}_{status}_{at}", "charge.refund.updated", at, obj)


def paid_flow(start: int = 1000) -> list[PaymentEvent]:
    """A SOFORT payment that succeeded: created, redirect, processing, succeeded."""
    return [
        created(start),
        requires_action(start + 1000),
        processing(start + 2000),
        succeeded(start + 3000),
    ]


def summary(state: OrderState) -> tuple[str, int, int, bool]:
    return (state.status, state.amount_received, state.amount_refunded, state.needs_review)


# --- every starting state x every event type ----------------------------------------------------

# Starting states, each built by a prefix of events one second apart.
PREFIXES: dict[str, list[PaymentEvent]] = {
    "new": [],
    "created": [created(1000)],
    "requires_action": [created(1000), requires_action(2000)],
    "processing": [created(1000), requires_action(2000), processing(3000)],
    "payment_failed": [created(1000), requires_action(2000), processing(3000), failed(4000)],
    "canceled": [created(1000), requires_action(2000), canceled(3000)],
    "expired": [created(1000), requires_action(2000), session_expired(3000)],
    "paid": paid_flow(),
    "partially_refunded": [*paid_flow(), refund("re_a", "succeeded", 5000, amount=500)],
    "refunded": [*paid_flow(), refund("re_a", "succeeded", 5000, amount=2000)],
}

# The next event, stamped after every prefix event. `created` is a new intent (a retry).
NEXT_AT = 10_000
NEXT_EVENTS: dict[str, Callable[[int], PaymentEvent]] = {
    "created": lambda at: created(at, pi="pi_2"),
    "requires_action": requires_action,
    "processing": processing,
    "payment_failed": failed,
    "canceled": canceled,
    "succeeded": succeeded,
    "session_unpaid": lambda at: session_completed(at, paid=False),
    "session_paid": lambda at: session_completed(at, paid=True),
    "session_expired": session_expired,
    "refund_pending": lambda at: refund("re_new", "pending", at),
    "refund_succeeded": lambda at: refund("re_new", "succeeded", at, amount=500),
}

Outcome = tuple[str, int, int, bool]  # status, received, refunded, needs_review
OPEN_PAID: Outcome = ("paid", 2000, 0, False)


def _open_row(status: str, created_to: str) -> dict[str, Outcome]:
    """Expected outcomes from an open (unpaid, unreleased) order."""
    same: Outcome = (status, 0, 0, False)
    return {
        "created": (created_to, 0, 0, False),
        "requires_action": ("requires_action", 0, 0, False),
        "processing": ("processing", 0, 0, False),
        "payment_failed": ("payment_failed", 0, 0, False),
        "canceled": ("canceled", 0, 0, False),
        "succeeded": OPEN_PAID,
        "session_unpaid": ("processing", 0, 0, False),
        "session_paid": OPEN_PAID,
        "session_expired": ("expired", 0, 0, False),
        "refund_pending": same,
        "refund_succeeded": same,
    }


def _released_row(status: str) -> dict[str, Outcome]:
    """Expected outcomes from a canceled or expired order: only money moves it (to review)."""
    same: Outcome = (status, 0, 0, False)
    row = dict.fromkeys(NEXT_EVENTS, same)
    row["succeeded"] = row["session_paid"] = ("paid", 2000, 0, True)
    return row


def _paid_row(status: str, refunded: int) -> dict[str, Outcome]:
    """Expected outcomes from a paid order: payment progress never goes backwards."""
    same: Outcome = (status, 2000, refunded, False)
    row = dict.fromkeys(NEXT_EVENTS, same)
    after = refunded + 500
    row["refund_succeeded"] = (
        "partially_refunded" if after < 2000 else "refunded",
        2000,
        after,
        after > 2000,
    )
    return row


EXPECTED: dict[str, dict[str, Outcome]] = {
    "new": _open_row("pending", created_to="pending"),
    "created": _open_row("pending", created_to="pending"),
    # A creation never undoes an attempt under way; after a failure it starts a new one.
    "requires_action": _open_row("requires_action", created_to="requires_action"),
    "processing": _open_row("processing", created_to="processing"),
    "payment_failed": _open_row("payment_failed", created_to="pending"),
    "canceled": _released_row("canceled"),
    "expired": _released_row("expired"),
    "paid": _paid_row("paid", 0),
    "partially_refunded": _paid_row("partially_refunded", 500),
    "refunded": _paid_row("refunded", 2000),
}

MATRIX = [
    pytest.param(start, event, EXPECTED[start][event], id=f"{start}+{event}")
    for start in PREFIXES
    for event in NEXT_EVENTS
]


@pytest.mark.parametrize(("start", "event", "expected"), MATRIX)
def test_next_event_from_every_state(start: str, event: str, expected: Outcome) -> None:
    """A later event moves each starting state as the product contract says."""
    state = project(TERMS, [*PREFIXES[start], NEXT_EVENTS[event](NEXT_AT)])
    assert summary(state) == expected


def test_matrix_covers_every_in_scope_event_type() -> None:
    """Every event type the parser lets through is in the matrix, so each one is projected."""
    assert {make(NEXT_AT).type for make in NEXT_EVENTS.values()} == IN_SCOPE_TYPES


PREFIX_STATUS: dict[str, str] = {
    "new": "pending",
    "created": "pending",
    "requires_action": "requires_action",
    "processing": "processing",
    "payment_failed": "payment_failed",
    "canceled": "canceled",
    "expired": "expired",
    "paid": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
}


@pytest.mark.parametrize("start", list(PREFIXES))
def test_prefix_builds_its_starting_state(start: str) -> None:
    """Each prefix of events yields the starting state it is named after."""
    assert project(TERMS, PREFIXES[start]).status == PREFIX_STATUS[start]


@pytest.mark.parametrize("start", list(PREFIXES))
def test_duplicates_of_every_event_change_nothing(start: str) -> None:
    """Redelivering every event of a prefix, in reverse, leaves the state as it was."""
    events = PREFIXES[start]
    assert project(TERMS, [*events, *reversed(events)]) == project(TERMS, events)


STALE_EVENTS: dict[str, Callable[[int], PaymentEvent]] = {
    "created": created,
    "requires_action": requires_action,
    "processing": processing,
    "payment_failed": failed,
    "session_unpaid": lambda at: session_completed(at, paid=False),
}
# Prefixes with progress beyond creation, and the time of their last payment (not refund) event.
STALE_TARGETS = {
    "requires_action": 2000,
    "processing": 3000,
    "payment_failed": 4000,
    "canceled": 3000,
    "expired": 3000,
    "paid": 4000,
    "partially_refunded": 4000,
    "refunded": 4000,
}


@pytest.mark.parametrize(
    ("start", "event"),
    [
        pytest.param(start, event, id=f"{start}+stale_{event}")
        for start in STALE_TARGETS
        for event in STALE_EVENTS
    ],
)
def test_stale_in_flight_event_arriving_last_changes_nothing(start: str, event: str) -> None:
    """An in-flight event stamped before the last payment event is overtaken, however late."""
    stale = STALE_EVENTS[event](STALE_TARGETS[start] - 1)
    before = project(TERMS, PREFIXES[start])
    after = project(TERMS, [*PREFIXES[start], stale])
    assert (after.status, after.amount_received, after.amount_refunded, after.needs_review) == (
        before.status,
        before.amount_received,
        before.amount_refunded,
        before.needs_review,
    )


# --- same-millisecond ties ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param(processing(5), succeeded(5), "paid", id="processing-vs-succeeded"),
        pytest.param(failed(5), succeeded(5), "paid", id="failed-vs-succeeded"),
        pytest.param(requires_action(5), failed(5), "payment_failed", id="action-vs-failed"),
        pytest.param(created(5), processing(5), "processing", id="created-vs-processing"),
        pytest.param(canceled(5), succeeded(5), "paid", id="canceled-vs-succeeded"),
        pytest.param(canceled(5), session_expired(5), "canceled", id="canceled-vs-expired"),
    ],
)
def test_same_millisecond_ties_favour_progress(
    first: PaymentEvent, second: PaymentEvent, expected: str
) -> None:
    """Events stamped with the same millisecond fold in rank order, whatever the arrival order."""
    forward = project(TERMS, [first, second])
    backward = project(TERMS, [second, first])
    assert forward == backward
    assert forward.status == expected


def test_canonical_order_sorts_by_time_then_rank_then_event_id() -> None:
    """The canonical order is (created_ms, rank, event_id) over distinct event ids."""
    events = [
        refund("re_a", "succeeded", 5),
        refund("re_a", "pending", 5),
        succeeded(5),
        session_completed(5, paid=True),
        session_expired(5),
        canceled(5),
        failed(5),
        session_completed(5, paid=False, cs="cs_0"),
        processing(5),
        requires_action(5),
        created(5),
        created(4, pi="pi_z"),
        created(4, pi="pi_a"),
        created(4, pi="pi_a"),
    ]
    assert [e.event_id for e in canonical_order(events)] == [
        "evt_created_pi_a_4",
        "evt_created_pi_z_4",
        "evt_created_pi_1_5",
        "evt_requires_action_pi_1_5",
        "evt_processing_pi_1_5",
        "evt_cs_completed_cs_0_5",
        "evt_payment_failed_pi_1_5",
        "evt_canceled_pi_1_5",
        "evt_cs_expired_cs_1_5",
        "evt_succeeded_pi_1_5",
        "evt_cs_completed_cs_1_5",
        "evt_re_a_pending_5",
        "evt_re_a_succeeded_5",
    ]


# --- failure and retry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "expected"),
    [
        pytest.param(requires_action(6000), "requires_action", id="redirect-again"),
        pytest.param(processing(6000), "processing", id="processing-again"),
        pytest.param(succeeded(6000), "paid", id="succeeded"),
        pytest.param(session_completed(6000, paid=False), "processing", id="session-completed"),
    ],
)
def test_retry_after_failure_moves_the_order_on(retry: PaymentEvent, expected: str) -> None:
    """A payment_failed followed later in time by a retry takes the retry's status."""
    state = project(TERMS, [retry, *PREFIXES["payment_failed"]])
    assert state.status == expected
    assert not state.needs_review


def test_full_sofort_flow_with_two_failures_ends_paid() -> None:
    """Create, two failed redirects, then a successful one: the order is paid."""
    events = [
        created(1),
        requires_action(2),
        processing(3),
        failed(4),
        requires_action(5),
        failed(6),
        requires_action(7),
        session_completed(8, paid=False),
        processing(9),
        succeeded(10),
    ]
    state = project(TERMS, reversed(events))
    assert state == OrderState(
        status=OrderStatus.PAID,
        amount_received=2000,
        amount_refunded=0,
        payment_intent_id=PI,
        checkout_session_id=CS,
        needs_review=False,
        review_reason=None,
        refunds=(),
    )


# --- expiry, cancel, paid after release ---------------------------------------------------------


@pytest.mark.parametrize(
    ("release", "payment", "reason"),
    [
        pytest.param(session_expired(3000), succeeded(4000), "paid_after_expired", id="exp-pi"),
        pytest.param(
            session_expired(3000),
            session_completed(4000, paid=True),
            "paid_after_expired",
            id="exp-session",
        ),
        pytest.param(canceled(3000), succeeded(4000), "paid_after_canceled", id="cancel-pi"),
        pytest.param(
            canceled(3000),
            session_completed(4000, paid=True),
            "paid_after_canceled",
            id="cancel-session",
        ),
    ],
)
def test_payment_after_release_is_paid_and_needs_review(
    release: PaymentEvent, payment: PaymentEvent, reason: str
) -> None:
    """Money arriving after cancel/expiry makes the order paid and flags it for review."""
    state = project(TERMS, [payment, created(1000), release])
    assert state.status == "paid"
    assert state.amount_received == 2000
    assert state.needs_review
    assert state.review_reason == (
        f"{reason}: money arrived for an order that was {reason.removeprefix('paid_after_')},"
        " which the merchant may have released"
    )


def test_expiry_after_payment_keeps_the_order_paid() -> None:
    """checkout.session.expired does not expire a paid order."""
    state = project(TERMS, [session_expired(9000), *paid_flow()])
    assert summary(state) == ("paid", 2000, 0, False)
    assert state.checkout_session_id == CS


def test_first_release_wins() -> None:
    """Expired then canceled stays expired: a released order is not released again."""
    state = project(TERMS, [canceled(4000), session_expired(3000), created(1000)])
    assert state.status == "expired"


# --- amounts and currencies ---------------------------------------------------------------------


def test_null_amount_received_counts_the_full_amount() -> None:
    """A succeeded intent with amount_received null received its full amount."""
    events = [created(1), intent_event("succeeded", 2, amount=2000, received=None)]
    state = project(TERMS, events)
    assert summary(state) == ("paid", 2000, 0, False)


@pytest.mark.parametrize(
    ("payment", "reason"),
    [
        pytest.param(
            succeeded(4000, amount=1500),
            "amount_mismatch: expected 2000 EUR, received 1500 EUR",
            id="intent-amount",
        ),
        pytest.param(
            succeeded(4000, amount=2000, received=1500),
            "amount_mismatch: expected 2000 EUR, received 1500 EUR",
            id="intent-partial-capture",
        ),
        pytest.param(
            succeeded(4000, currency="USD"),
            "currency_mismatch: expected 2000 EUR, received 2000 USD",
            id="intent-currency",
        ),
        pytest.param(
            session_completed(4000, paid=True, amount_total=2500),
            "amount_mismatch: expected 2000 EUR, received 2500 EUR",
            id="session-amount",
        ),
        pytest.param(
            session_completed(4000, paid=True, currency="GBP"),
            "currency_mismatch: expected 2000 EUR, received 2000 GBP",
            id="session-currency",
        ),
        pytest.param(
            session_completed(4000, paid=True, amount_total=None),
            "unverifiable_payment: checkout session cs_1 is paid without amount_total or currency",
            id="session-no-amount",
        ),
    ],
)
def test_mismatched_success_is_not_paid_and_needs_review(
    payment: PaymentEvent, reason: str
) -> None:
    """A success whose money differs from the terms leaves the status and needs review."""
    state = project(TERMS, [*PREFIXES["processing"], payment])
    assert summary(state) == ("processing", 0, 0, True)
    assert state.review_reason == reason


@pytest.mark.parametrize(
    ("terms_currency", "event_currency"),
    [
        pytest.param("EUR", "eur", id="event-lower"),
        pytest.param("eur", "EUR", id="terms-lower"),
        pytest.param("Eur", "eUR", id="mixed"),
    ],
)
def test_currency_case_is_not_a_mismatch(terms_currency: str, event_currency: str) -> None:
    """Currencies compare case-insensitively."""
    terms = OrderTerms(order_id=ORDER_ID, amount=2000, currency=terms_currency)
    events = [*PREFIXES["processing"], succeeded(4000, currency=event_currency)]
    assert summary(project(terms, events)) == ("paid", 2000, 0, False)


def test_mismatched_success_does_not_protect_against_expiry() -> None:
    """After a mismatched success the order can still expire: it was never paid."""
    events = [*PREFIXES["processing"], succeeded(4000, amount=1), session_expired(5000)]
    state = project(TERMS, events)
    assert summary(state) == ("expired", 0, 0, True)
    assert state.review_reason == "amount_mismatch: expected 2000 EUR, received 1 EUR"


def test_mismatched_success_does_not_count_refunds() -> None:
    """Refunds of a mismatched payment are listed but not counted: the order is not paid."""
    events = [
        *PREFIXES["processing"],
        succeeded(4000, amount=1500),
        refund("re_a", "succeeded", 5000, amount=1500),
    ]
    state = project(TERMS, events)
    assert summary(state) == ("processing", 0, 0, True)
    assert state.refunds == (RefundState("re_a", 1500, "succeeded"),)


def test_same_mismatch_reported_twice_is_one_reason() -> None:
    """The intent and the paid session reporting the same wrong amount give one reason."""
    events = [
        *PREFIXES["processing"],
        succeeded(4000, amount=1500),
        session_completed(4001, paid=True, amount_total=1500),
    ]
    state = project(TERMS, events)
    assert state.review_reason == "amount_mismatch: expected 2000 EUR, received 1500 EUR"


def test_correct_payment_after_mismatch_is_paid_and_keeps_the_reason() -> None:
    """A matching success after a mismatched one pays the order; the review reason stays."""
    events = [
        *PREFIXES["processing"],
        succeeded(4000, pi="pi_2", amount=1500),
        succeeded(5000, pi="pi_3"),
    ]
    state = project(TERMS, events)
    assert summary(state) == ("paid", 2000, 0, True)
    assert state.review_reason == "amount_mismatch: expected 2000 EUR, received 1500 EUR"
    assert state.payment_intent_id == "pi_3"


def test_second_intent_succeeding_is_a_duplicate_payment() -> None:
    """A different intent succeeding on a paid order flags a duplicate payment."""
    state = project(TERMS, [*paid_flow(), succeeded(9000, pi="pi_2")])
    assert summary(state) == ("paid", 2000, 0, True)
    assert state.review_reason == "duplicate_payment: pi_2 succeeded after pi_1 had paid the order"


def test_paid_session_of_the_paying_intent_is_not_a_duplicate() -> None:
    """The paid session and its intent's success report one payment."""
    events = [*paid_flow(), session_completed(4000, paid=True, pi=PI)]
    assert summary(project(TERMS, events)) == ("paid", 2000, 0, False)


# --- refunds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refunds", "expected"),
    [
        pytest.param(
            [refund("re_a", "succeeded", 5000, amount=500)],
            ("partially_refunded", 2000, 500, False),
            id="one-partial",
        ),
        pytest.param(
            [
                refund("re_a", "succeeded", 5000, amount=500),
                refund("re_b", "succeeded", 5001, amount=700),
                refund("re_c", "succeeded", 5002, amount=300),
            ],
            ("partially_refunded", 2000, 1500, False),
            id="several-partials",
        ),
        pytest.param(
            [
                refund("re_a", "succeeded", 5000, amount=1000),
                refund("re_b", "succeeded", 5001, amount=1000),
            ],
            ("refunded", 2000, 2000, False),
            id="partials-reach-full",
        ),
        pytest.param(
            [refund("re_a", "succeeded", 5000, amount=2000)],
            ("refunded", 2000, 2000, False),
            id="full",
        ),
        pytest.param(
            [refund("re_a", "pending", 5000, amount=500)],
            ("paid", 2000, 0, False),
            id="pending-not-counted",
        ),
        pytest.param(
            [refund("re_a", "requires_action", 5000, amount=500)],
            ("paid", 2000, 0, False),
            id="requires-action-not-counted",
        ),
        pytest.param(
            [refund("re_a", "pending", 5000), refund("re_a", "canceled", 5001)],
            ("paid", 2000, 0, False),
            id="canceled-not-counted",
        ),
        pytest.param(
            [
                refund("re_a", "pending", 5000),
                refund("re_a", "succeeded", 5001),
                refund("re_a", "failed", 5002),
            ],
            ("paid", 2000, 0, False),
            id="failed-after-success",
        ),
        pytest.param(
            [
                refund("re_a", "succeeded", 5000, amount=500),
                refund("re_a", "succeeded", 5000, amount=500),
                refund("re_a", "succeeded", 5001, amount=500),
            ],
            ("partially_refunded", 2000, 500, False),
            id="one-refund-counts-once",
        ),
        pytest.param(
            [refund("re_a", "succeeded", 5000, amount=500, currency="eur")],
            ("partially_refunded", 2000, 500, False),
            id="lower-case-currency",
        ),
    ],
)
def test_refund_arithmetic(refunds: list[PaymentEvent], expected: Outcome) -> None:
    """Each refund counts once at its latest status, and only succeeded refunds count."""
    state = project(TERMS, [*reversed(refunds), *paid_flow()])
    assert summary(state) == expected


def test_over_refund_is_refunded_and_needs_review() -> None:
    """Refunds totalling above the received amount are counted and flagged."""
    events = [
        *paid_flow(),
        refund("re_a", "succeeded", 5000, amount=1500),
        refund("re_b", "succeeded", 5001, amount=1000),
    ]
    state = project(TERMS, events)
    assert summary(state) == ("refunded", 2000, 2500, True)
    assert state.review_reason == "refund_exceeds_received: refunded 2500 EUR, received 2000 EUR"


def test_refund_before_payment_is_kept_and_counted_once_paid() -> None:
    """A refund seen before the payment is listed at once, and counted when the order is paid."""
    early = refund("re_a", "succeeded", 500, amount=700)
    before = project(TERMS, [early, created(1000), requires_action(2000)])
    assert summary(before) == ("requires_action", 0, 0, False)
    assert before.refunds == (RefundState("re_a", 700, "succeeded"),)
    after = project(TERMS, [early, *paid_flow()])
    assert summary(after) == ("partially_refunded", 2000, 700, False)


def test_refund_latest_status_is_by_time_not_arrival() -> None:
    """A refund's earlier update arriving last does not replace its later status."""
    events = [*paid_flow(), refund("re_a", "succeeded", 6000), refund("re_a", "pending", 5000)]
    state = project(TERMS, events)
    assert state.refunds == (RefundState("re_a", 500, "succeeded"),)
    assert state.amount_refunded == 500


@pytest.mark.parametrize(
    ("statuses", "latest"),
    [
        pytest.param(("pending", "succeeded"), "succeeded", id="pending-succeeded"),
        pytest.param(("requires_action", "pending"), "pending", id="action-pending"),
        pytest.param(("succeeded", "failed"), "failed", id="succeeded-failed"),
        pytest.param(("pending", "canceled"), "canceled", id="pending-canceled"),
        pytest.param(("succeeded", "canceled"), "canceled", id="succeeded-canceled"),
    ],
)
def test_refund_same_millisecond_tie_takes_the_later_stage(
    statuses: tuple[str, str], latest: str
) -> None:
    """Two updates of a refund in the same millisecond resolve by refund status rank."""
    updates = [refund("re_a", status, 5000) for status in statuses]
    state = project(TERMS, [*reversed(updates), *paid_flow()])
    assert state.refunds == (RefundState("re_a", 500, latest),)


def test_refunds_are_sorted_by_refund_id() -> None:
    """The refunds tuple lists each refund once, sorted by refund id."""
    events = [
        *paid_flow(),
        refund("re_c", "pending", 5000, amount=1),
        refund("re_a", "succeeded", 5001, amount=2),
        refund("re_b", "failed", 5002, amount=3),
    ]
    assert project(TERMS, events).refunds == (
        RefundState("re_a", 2, "succeeded"),
        RefundState("re_b", 3, "failed"),
        RefundState("re_c", 1, "pending"),
    )


def test_refund_in_another_currency_is_not_counted() -> None:
    """A refund in a currency other than the order's is listed, not counted, and flagged."""
    state = project(TERMS, [*paid_flow(), refund("re_a", "succeeded", 5000, currency="USD")])
    assert summary(state) == ("paid", 2000, 0, True)
    assert (
        state.review_reason == "refund_currency_mismatch: refund re_a is in USD, the order in EUR"
    )


def test_refund_on_released_order_is_not_counted() -> None:
    """A refund on an expired order is listed but the order stays expired with nothing refunded."""
    state = project(TERMS, [*PREFIXES["expired"], refund("re_a", "succeeded", 5000)])
    assert summary(state) == ("expired", 0, 0, False)
    assert state.refunds == (RefundState("re_a", 500, "succeeded"),)


# --- links --------------------------------------------------------------------------------------


def test_initial_state_starts_from_registered_links() -> None:
    """An untouched order is pending with the links the merchant registered."""
    terms = OrderTerms(ORDER_ID, 2000, "EUR", payment_intent_id="pi_r", checkout_session_id="cs_r")
    expected = OrderState(
        status=OrderStatus.PENDING,
        amount_received=0,
        amount_refunded=0,
        payment_intent_id="pi_r",
        checkout_session_id="cs_r",
        needs_review=False,
        review_reason=None,
        refunds=(),
    )
    assert initial_state(terms) == expected
    assert project(terms, []) == expected


def test_latest_intent_and_session_in_fold_order_become_the_links() -> None:
    """The latest intent and session by time replace the registered links, whatever the arrival."""
    terms = OrderTerms(ORDER_ID, 2000, "EUR", payment_intent_id="pi_r", checkout_session_id="cs_r")
    events = [
        succeeded(3000, pi="pi_2"),
        session_completed(2500, paid=False, cs="cs_2", pi="pi_2"),
        failed(2000, pi="pi_1"),
        session_expired(1500, cs="cs_1"),
    ]
    state = project(terms, events)
    assert (state.payment_intent_id, state.checkout_session_id) == ("pi_2", "cs_2")
    assert state.status == "paid"


def test_session_without_intent_keeps_the_intent_link() -> None:
    """A session that names no intent links itself and leaves the intent link alone."""
    terms = OrderTerms(ORDER_ID, 2000, "EUR", payment_intent_id="pi_r")
    state = project(terms, [session_completed(1, paid=False, pi=None)])
    assert (state.payment_intent_id, state.checkout_session_id) == ("pi_r", CS)
    assert state.status == "processing"


def test_refunds_do_not_relink_the_order() -> None:
    """A refund event does not change the order's payment intent link."""
    terms = OrderTerms(ORDER_ID, 2000, "EUR", payment_intent_id="pi_r")
    state = project(terms, [refund("re_a", "pending", 1)])
    assert state.payment_intent_id == "pi_r"


# --- review reasons, duplicates and bad input ---------------------------------------------------


def test_review_reasons_accumulate_unique_in_fold_order() -> None:
    """Several review reasons are kept once each, in fold order, joined with '; '."""
    events = [
        created(1000),
        session_expired(2000),
        succeeded(3000, pi="pi_x", amount=1),
        succeeded(3500, pi="pi_y", amount=1),
        succeeded(4000),
        refund("re_a", "succeeded", 5000, amount=2500),
    ]
    state = project(TERMS, list(reversed(events)))
    assert state.review_reason == "; ".join(
        [
            "amount_mismatch: expected 2000 EUR, received 1 EUR",
            "paid_after_expired: money arrived for an order that was expired,"
            " which the merchant may have released",
            "refund_exceeds_received: refunded 2500 EUR, received 2000 EUR",
        ]
    )
    assert summary(state) == ("refunded", 2000, 2500, True)


def test_conflicting_bodies_under_one_event_id_resolve_the_same_way() -> None:
    """Two different bodies sharing an event id give one result whichever arrives first."""
    good = succeeded(4000, event_id="evt_same")
    bad = succeeded(4000, amount=1, event_id="evt_same")
    prefix = PREFIXES["processing"]
    assert project(TERMS, [*prefix, good, bad]) == project(TERMS, [*prefix, bad, good])


def test_unknown_event_type_is_refused() -> None:
    """An event type the projection does not know raises instead of being silently skipped."""
    stray = PaymentEvent("evt_x", "charge.succeeded", 1, created(1).object)
    with pytest.raises(ValueError, match="not projected"):
        project(TERMS, [stray])


def test_object_that_does_not_fit_its_type_is_refused() -> None:
    """A payment_intent event carrying a refund object raises."""
    stray = PaymentEvent(
        "evt_x", "payment_intent.succeeded", 1, refund("re_a", "pending", 1).object
    )
    with pytest.raises(ValueError, match="does not carry a PaymentIntent"):
        project(TERMS, [stray])
