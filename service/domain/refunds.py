"""Refund bookkeeping for the order projection: which status of a refund wins, and what counts.

A refund is reported by `charge.refund.updated` each time its status changes, so one refund id
appears in several events. The projection keeps each refund once, at its latest status, and only
money that has actually gone back to the customer (`succeeded`) is counted as refunded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from service.domain.events import Refund, RefundStatus

# Tie-break between updates of one refund stamped with the same millisecond: the later stage of a
# refund's life wins. Customer action comes before the refund is submitted (pending), terminal
# statuses beat both, and `failed` ranks last because a refund can fail after it succeeded (the
# bank returns the money), never the other way round.
REFUND_STATUS_RANK: Final[Mapping[str, int]] = {
    RefundStatus.REQUIRES_ACTION: 0,
    RefundStatus.PENDING: 1,
    RefundStatus.SUCCEEDED: 2,
    RefundStatus.CANCELED: 3,
    RefundStatus.FAILED: 4,
}


@dataclass(frozen=True, slots=True)
class RefundState:
    """One refund of the order, at its latest status."""

    refund_id: str
    amount: int
    status: str  # one of RefundStatus


@dataclass(frozen=True, slots=True)
class RefundTotals:
    """The refunds of an order, summarised for the order's state."""

    refunds: tuple[RefundState, ...]  # sorted by refund_id
    succeeded: int  # money back to the customer, in the order's currency
    foreign: tuple[Refund, ...]  # refunds in another currency: not comparable, not counted


def refund_status_rank(status: str) -> int:
    """Rank a refund status for ordering same-millisecond updates; unknown statuses are a bug."""
    try:
        return REFUND_STATUS_RANK[status]
    except KeyError:
        raise ValueError(f"unknown refund status {status!r}") from None


def summarise(latest: Mapping[str, Refund], currency: str) -> RefundTotals:
    """Summarise each refund's latest update (keyed by refund id) for an order in `currency`."""
    ordered = [latest[refund_id] for refund_id in sorted(latest)]
    same_currency = [r for r in ordered if r.currency.upper() == currency.upper()]
    return RefundTotals(
        refunds=tuple(RefundState(r.id, r.amount, r.status) for r in ordered),
        succeeded=_succeeded_total(same_currency),
        foreign=tuple(r for r in ordered if r.currency.upper() != currency.upper()),
    )


def _succeeded_total(refunds: Iterable[Refund]) -> int:
    # Pending or requires_action money has not left yet; failed/canceled never will (or came back).
    return sum(r.amount for r in refunds if r.status == RefundStatus.SUCCEEDED)
