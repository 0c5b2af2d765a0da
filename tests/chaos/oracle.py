"""What every order must end as, worked out from its life cycle's plan like an accountant would.

Independent of the service: it does not import `service.domain` and never folds events. It reads
the plan's choices (how the payment ended, what was charged, which refunds happened and how each
one ended) and applies the contract (service/domain/orders.py) directly:

- money that arrived in the right amount and currency makes the order paid; if the order had
  expired first, it is still paid but needs review;
- money in the wrong amount or currency is not payment: the order stays where the payment was
  (SOFORT confirms through `processing`, so `processing`), needs review, and nothing counts as
  received (this is our reading of "not marked paid");
- otherwise the order is where the payment stopped: declined (`payment_failed`), waiting for the
  customer's redirect (`requires_action`) or the bank (`processing`), `canceled` or `expired`;
- each refund counts once at its final status; only succeeded refunds are refunded money, which
  makes a paid order partially refunded or refunded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tests.chaos.scenario import (
    AWAITING_ACTION,
    AWAITING_CONFIRMATION,
    CANCELED,
    DECLINED,
    EXPIRED,
    SUCCEEDED,
    OrderPlan,
)

# Where an unpaid order stands, by how its payment ended.
_UNPAID_STATUS: Final[Mapping[str, str]] = {
    DECLINED: "payment_failed",
    AWAITING_ACTION: "requires_action",
    AWAITING_CONFIRMATION: "processing",
    CANCELED: "canceled",
    EXPIRED: "expired",
}


@dataclass(frozen=True, slots=True)
class OrderOutcome:
    """The fields of an order the soak compares (expected or as read from the order store)."""

    status: str
    amount_received: int
    amount_refunded: int
    needs_review: bool
    refunds: Mapping[str, tuple[int, str]]  # refund id -> (amount, status)


def expected_outcome(plan: OrderPlan) -> OrderOutcome:
    refunds = {refund.refund_id: (refund.amount, refund.final_status) for refund in plan.refunds}
    if plan.outcome != SUCCEEDED:
        return OrderOutcome(_UNPAID_STATUS[plan.outcome], 0, 0, False, refunds)
    right_money = plan.charged_amount == plan.amount and (
        plan.charged_currency.upper() == plan.currency.upper()
    )
    if not right_money:
        return OrderOutcome("processing", 0, 0, True, refunds)
    refunded = sum(amount for amount, status in refunds.values() if status == "succeeded")
    if refunded == 0:
        status = "paid"
    elif refunded < plan.amount:
        status = "partially_refunded"
    else:
        status = "refunded"
    review = plan.expired_before_payment or refunded > plan.amount
    return OrderOutcome(status, plan.amount, refunded, review, refunds)


def differences(expected: OrderOutcome, actual: OrderOutcome | None) -> list[str]:
    """Human-readable differences; empty when the order is exactly as expected."""
    if actual is None:
        return ["order missing from the order store"]
    found = []
    for name in ("status", "amount_received", "amount_refunded", "needs_review"):
        want, got = getattr(expected, name), getattr(actual, name)
        if want != got:
            found.append(f"{name}: expected {want!r}, found {got!r}")
    for refund_id in sorted(set(expected.refunds) | set(actual.refunds)):
        want_refund = expected.refunds.get(refund_id)
        got_refund = actual.refunds.get(refund_id)
        if want_refund != got_refund:
            found.append(f"refund {refund_id}: expected {want_refund}, found {got_refund}")
    return found
