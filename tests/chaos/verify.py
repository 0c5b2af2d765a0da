"""Reading the outcome straight from the order store's tables and holding it against the oracle.

- `mismatches`: orders whose status, amounts, review flag or refunds (by id, with amount and
  status) differ from what the oracle expects;
- `lost`: accepted events that did not end as they must: in-scope events `processed`, out-of-scope
  ones `ignored` (missing, `pending` and `failed` all count);
- `misattributed`: processed events recorded against another order than their own;
- `over_applied`: orders rewritten more often than they have processed events (each distinct
  event may change the order store at most once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.chaos.oracle import OrderOutcome, differences, expected_outcome
from tests.chaos.scenario import Scenario

DETAIL_LIMIT = 20
# docs/wooshpay.md: the event types the service reconciles; any other is acknowledged and `ignored`.
IN_SCOPE_TYPES = frozenset(
    {
        "payment_intent.created",
        "payment_intent.requires_action",
        "payment_intent.processing",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
        "checkout.session.completed",
        "checkout.session.expired",
        "charge.refund.updated",
    }
)


@dataclass(frozen=True, slots=True)
class InboxRow:
    status: str
    order_id: str | None
    attempts: int
    last_error: str | None


@dataclass
class Verdict:
    orders_checked: int = 0
    mismatches: int = 0
    lost: int = 0
    misattributed: int = 0
    over_applied: int = 0
    event_statuses: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    def note(self, line: str) -> None:
        if len(self.details) < DETAIL_LIMIT:
            self.details.append(line)


async def read_orders(engine: AsyncEngine) -> dict[str, tuple[OrderOutcome, int]]:
    """Every order's outcome and version, from the orders and refunds tables."""
    async with engine.connect() as connection:
        refund_rows = await connection.execute(
            text("SELECT order_id, refund_id, amount, status FROM refunds")
        )
        refunds: dict[str, dict[str, tuple[int, str]]] = {}
        for order_id, refund_id, amount, status in refund_rows:
            refunds.setdefault(order_id, {})[refund_id] = (int(amount), str(status))
        order_rows = await connection.execute(
            text(
                "SELECT order_id, status, amount_received, amount_refunded, needs_review, version"
                " FROM orders"
            )
        )
        return {
            row.order_id: (
                OrderOutcome(
                    row.status,
                    int(row.amount_received),
                    int(row.amount_refunded),
                    bool(row.needs_review),
                    refunds.get(row.order_id, {}),
                ),
                int(row.version),
            )
            for row in order_rows
        }


async def read_inbox(engine: AsyncEngine) -> dict[str, InboxRow]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT event_id, status, order_id, attempts, last_error FROM events")
        )
        return {
            row.event_id: InboxRow(row.status, row.order_id, int(row.attempts), row.last_error)
            for row in rows
        }


async def verify(engine: AsyncEngine, scenario: Scenario, accepted: Set[str]) -> Verdict:
    verdict = Verdict()
    inbox = await read_inbox(engine)
    verdict.event_statuses.update(row.status for row in inbox.values())
    _check_events(verdict, scenario, inbox, accepted)
    processed_per_order = Counter(
        row.order_id for row in inbox.values() if row.status == "processed"
    )
    _check_orders(verdict, scenario, await read_orders(engine), processed_per_order)
    return verdict


def _check_events(
    verdict: Verdict, scenario: Scenario, inbox: Mapping[str, InboxRow], accepted: Set[str]
) -> None:
    for order, event in scenario.events():
        event_id = event["id"]
        if event_id not in accepted:
            continue  # never answered 2xx: nothing was promised (reported as undelivered)
        row = inbox.get(event_id)
        must_be = "processed" if event["type"] in IN_SCOPE_TYPES else "ignored"
        if row is None or row.status != must_be:
            verdict.lost += 1
            found = "missing" if row is None else f"{row.status} ({row.last_error})"
            verdict.note(f"lost: {event_id} {event['type']} of {order.order_id}: {found}")
        elif must_be == "processed" and row.order_id != order.order_id:
            verdict.misattributed += 1
            verdict.note(f"misattributed: {event_id} on {row.order_id}, not {order.order_id}")


def _check_orders(
    verdict: Verdict,
    scenario: Scenario,
    stored: Mapping[str, tuple[OrderOutcome, int]],
    processed_per_order: Mapping[str | None, int],
) -> None:
    for plan in scenario.orders:
        verdict.orders_checked += 1
        found = stored.get(plan.order_id)
        problems = differences(expected_outcome(plan), found[0] if found else None)
        if problems:
            verdict.mismatches += 1
            verdict.note(f"mismatch: {plan.order_id} ({plan.life_cycle}): {'; '.join(problems)}")
        if found is not None and found[1] > processed_per_order.get(plan.order_id, 0):
            verdict.over_applied += 1
            verdict.note(
                f"over-applied: {plan.order_id} version {found[1]} >"
                f" {processed_per_order.get(plan.order_id, 0)} processed events"
            )
