"""Realistic WooshPay order life cycles, with the choices that made them.

Each order gets one life cycle of the kinds a SOFORT integration produces: the redirect and
delayed confirmation (created -> requires_action -> processing -> succeeded), declines and retries
(sometimes on a new PaymentIntent), Checkout Sessions that complete unpaid or expire (and, now and
then, a payment that still succeeds after the expiry), cancellation, amount or currency
mismatches, and partial refunds that go pending -> succeeded/failed. Paid orders sometimes also
get an out-of-scope `charge.succeeded`, which the service must record as `ignored`.

Events are built with `service.devtools.sender.build_event`, stamped with a strictly increasing
`created`
(milliseconds) in the true order of the order's life, and given ids drawn from the seeded random
generator, so a seed reproduces a scenario. The plan's fields (outcome, amounts, refunds) are what
`tests.chaos.oracle` reads; it never looks at the events.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from service.devtools.sender import EventOptions, build_event

Event = dict[str, Any]
T = TypeVar("T")

# Life cycle -> share of the orders.
LIFE_CYCLES: Final[Mapping[str, float]] = {
    "paid": 0.30,
    "checkout_paid": 0.14,
    "declined_then_paid": 0.12,
    "declined": 0.06,
    "awaiting_action": 0.04,
    "awaiting_confirmation": 0.05,
    "expired": 0.08,
    "paid_after_expiry": 0.04,
    "canceled": 0.08,
    "amount_mismatch": 0.07,
    "currency_mismatch": 0.02,
}
# How a payment ended, as far as WooshPay's events tell.
SUCCEEDED: Final = "succeeded"
DECLINED: Final = "declined"
AWAITING_ACTION: Final = "awaiting_action"
AWAITING_CONFIRMATION: Final = "awaiting_confirmation"
CANCELED: Final = "canceled"
EXPIRED: Final = "expired"

# Each refund's status updates, in true order -> share of the refunds.
REFUND_HISTORIES: Final[Mapping[tuple[str, ...], float]] = {
    ("pending", "succeeded"): 0.68,
    ("pending", "failed"): 0.12,
    ("pending",): 0.08,
    ("succeeded",): 0.07,
    ("requires_action", "pending", "succeeded"): 0.05,
}
REFUND_COUNTS: Final[Mapping[int, float]] = {0: 0.45, 1: 0.25, 2: 0.15, 3: 0.10, 4: 0.05}
FULL_REFUND_SHARE: Final = 0.25
LOWER_CASE_CURRENCY_SHARE: Final = 0.2
OUT_OF_SCOPE_SHARE: Final = 0.25
# docs/wooshpay.md: a succeeded PaymentIntent's amount_received may be null (then `amount` arrived).
NULL_RECEIVED_SHARE: Final = 0.25
# Linking (workers/apply.py): orders named only by `metadata.order_id`, or not named at all
# (found through the PaymentIntent the merchant registered).
METADATA_ONLY_SHARE: Final = 0.15
UNNAMED_SHARE: Final = 0.4

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60 * SECOND_MS
HOUR_MS: Final = 60 * MINUTE_MS
DAY_MS: Final = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class RefundPlan:
    refund_id: str
    amount: int
    statuses: tuple[str, ...]  # every update WooshPay reports, in true order

    @property
    def final_status(self) -> str:
        return self.statuses[-1]


@dataclass(frozen=True, slots=True)
class OrderPlan:
    """One order: what the merchant registered, what happened to it, and the events that say so."""

    order_id: str
    amount: int
    currency: str
    life_cycle: str
    outcome: str  # SUCCEEDED, DECLINED, AWAITING_ACTION, ...
    charged_amount: int  # what the PaymentIntents asked for (differs on an amount mismatch)
    charged_currency: str
    expired_before_payment: bool  # the session expired, then the payment still succeeded
    refunds: tuple[RefundPlan, ...]
    registered_payment_intent: str | None
    registered_checkout_session: str | None
    events: tuple[Event, ...]  # in true order: strictly increasing `created`


@dataclass(frozen=True, slots=True)
class Scenario:
    seed: int
    orders: tuple[OrderPlan, ...]

    def events(self) -> Iterator[tuple[OrderPlan, Event]]:
        for order in self.orders:
            for event in order.events:
                yield order, event

    @property
    def event_count(self) -> int:
        return sum(len(order.events) for order in self.orders)


def generate(order_count: int, *, seed: int, now_ms: int | None = None) -> Scenario:
    rng = random.Random(seed)
    tag = f"{rng.getrandbits(24):06x}"
    start_ms = (now_ms if now_ms is not None else int(time.time() * 1000)) - 30 * DAY_MS
    orders = tuple(
        _order(rng, f"ord_{tag}_{index:05d}", start_ms + rng.randrange(5 * DAY_MS))
        for index in range(order_count)
    )
    return Scenario(seed, orders)


def _pick(rng: random.Random, weights: Mapping[T, float]) -> T:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _token(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


@dataclass
class _Builder:
    """Accumulates one order's events on its own strictly increasing clock."""

    rng: random.Random
    order_id: str
    charged_amount: int
    charged_currency: str
    at_ms: int
    checkout_session: str
    events: list[Event] = field(default_factory=list)

    def new_intent(self) -> str:
        return f"pi_{_token(self.rng)}"

    def after(self, low_ms: int, high_ms: int) -> int:
        self.at_ms += self.rng.randint(max(low_ms, 1), max(high_ms, 1))
        return self.at_ms

    def add(self, event_type: str, gap_ms: tuple[int, int], **options: Any) -> Event:
        opts = EventOptions(
            order_id=self.order_id,
            amount=self.charged_amount,
            currency=self.charged_currency,
            checkout_session=self.checkout_session,
            **options,
        )
        event = build_event(event_type, opts, now_ms=self.after(*gap_ms))
        event["id"] = f"evt_{_token(self.rng)}"
        if self.rng.random() < LOWER_CASE_CURRENCY_SHARE:
            # WooshPay sends currency codes in either case.
            obj = event["data"]["object"]
            obj["currency"] = obj["currency"].lower()
        self.events.append(event)
        return event

    def intent(self, event_type: str, intent: str, gap_ms: tuple[int, int]) -> None:
        self.add(event_type, gap_ms, payment_intent=intent)

    def out_of_scope(self, intent: str) -> None:
        """A `charge.succeeded` next to the success: acknowledged and recorded as ignored."""
        created = self.after(1, 2 * SECOND_MS)
        charge = {
            "id": f"ch_{_token(self.rng)}",
            "object": "charge",
            "amount": self.charged_amount,
            "currency": self.charged_currency,
            "payment_intent": intent,
            "status": "succeeded",
            "created": created,
        }
        event = build_event(
            "payment_intent.succeeded", EventOptions(order_id=self.order_id), now_ms=created
        )
        event.update(id=f"evt_{_token(self.rng)}", type="charge.succeeded", data={"object": charge})
        self.events.append(event)


# --- the payment part of the life cycles ---------------------------------------------------------

REDIRECT_GAP: Final = (200, 5 * SECOND_MS)
AUTHORISE_GAP: Final = (20 * SECOND_MS, 15 * MINUTE_MS)
COMPLETE_GAP: Final = (10, 2 * SECOND_MS)
CONFIRMATION_GAP: Final = (MINUTE_MS, DAY_MS)
RETRY_GAP: Final = (MINUTE_MS, 6 * HOUR_MS)


def _attempt(b: _Builder, intent: str, ending: str, *, checkout: bool = False) -> None:
    """One SOFORT attempt: redirect, then (unless abandoned) processing, then the bank's verdict."""
    b.intent("payment_intent.requires_action", intent, REDIRECT_GAP)
    if ending == AWAITING_ACTION:
        return
    if checkout:
        # SOFORT is delayed: the session completes while the payment is still unpaid.
        b.add("checkout.session.completed", AUTHORISE_GAP, payment_intent=intent)
        b.intent("payment_intent.processing", intent, COMPLETE_GAP)
    else:
        b.intent("payment_intent.processing", intent, AUTHORISE_GAP)
    if ending == AWAITING_CONFIRMATION:
        return
    verdict = "payment_intent.succeeded" if ending == SUCCEEDED else "payment_intent.payment_failed"
    b.intent(verdict, intent, CONFIRMATION_GAP)


def _paid(b: _Builder, *, checkout: bool) -> str:
    intent = b.new_intent()
    b.intent("payment_intent.created", intent, (1, SECOND_MS))
    _attempt(b, intent, SUCCEEDED, checkout=checkout)
    return intent


def _declines(b: _Builder, *, then: str) -> str:
    """One or two declined attempts, each followed by a retry (sometimes on a new intent)."""
    intent = b.new_intent()
    b.intent("payment_intent.created", intent, (1, SECOND_MS))
    for _ in range(b.rng.randint(1, 2)):
        _attempt(b, intent, DECLINED)
        if then == DECLINED:
            continue
        if b.rng.random() < 0.3:
            intent = b.new_intent()
            b.intent("payment_intent.created", intent, RETRY_GAP)
    if then == SUCCEEDED:
        _attempt(b, intent, SUCCEEDED)
    return intent


def _expiry(b: _Builder, *, paid_late: bool) -> str:
    intent = b.new_intent()
    b.intent("payment_intent.created", intent, (1, SECOND_MS))
    b.intent("payment_intent.requires_action", intent, REDIRECT_GAP)
    if paid_late:
        b.intent("payment_intent.processing", intent, AUTHORISE_GAP)
    b.add("checkout.session.expired", (HOUR_MS, DAY_MS), payment_intent=intent)
    if paid_late:
        # The bank confirmed the SOFORT transfer after the merchant's session had expired.
        b.intent("payment_intent.succeeded", intent, (HOUR_MS, DAY_MS))
    return intent


def _canceled(b: _Builder) -> str:
    intent = b.new_intent()
    b.intent("payment_intent.created", intent, (1, SECOND_MS))
    if b.rng.random() < 0.6:
        b.intent("payment_intent.requires_action", intent, REDIRECT_GAP)
    b.intent("payment_intent.canceled", intent, (MINUTE_MS, 2 * HOUR_MS))
    return intent


def _open(b: _Builder, ending: str) -> str:
    intent = b.new_intent()
    b.intent("payment_intent.created", intent, (1, SECOND_MS))
    _attempt(b, intent, ending, checkout=b.rng.random() < 0.5)
    return intent


def _payment(b: _Builder, life_cycle: str) -> tuple[str, str]:
    """Play the payment part of `life_cycle`; return (outcome, the PaymentIntent that ended it)."""
    if life_cycle in ("paid", "amount_mismatch", "currency_mismatch"):
        return SUCCEEDED, _paid(b, checkout=False)
    if life_cycle == "checkout_paid":
        return SUCCEEDED, _paid(b, checkout=True)
    if life_cycle == "declined_then_paid":
        return SUCCEEDED, _declines(b, then=SUCCEEDED)
    if life_cycle == "declined":
        return DECLINED, _declines(b, then=DECLINED)
    if life_cycle in ("expired", "paid_after_expiry"):
        paid_late = life_cycle == "paid_after_expiry"
        return (SUCCEEDED if paid_late else EXPIRED), _expiry(b, paid_late=paid_late)
    if life_cycle == "canceled":
        return CANCELED, _canceled(b)
    if life_cycle in (AWAITING_ACTION, AWAITING_CONFIRMATION):
        return life_cycle, _open(b, life_cycle)
    raise ValueError(f"unknown life cycle {life_cycle!r}")


# --- refunds -------------------------------------------------------------------------------------


def _refund_plans(rng: random.Random, amount: int) -> tuple[RefundPlan, ...]:
    count = _pick(rng, REFUND_COUNTS)
    if count == 0:
        return ()
    full = rng.random() < FULL_REFUND_SHARE
    budget = amount if full else rng.randint(count, max(count, amount * 9 // 10))
    cuts = sorted(rng.sample(range(1, budget), count - 1)) if count > 1 else []
    amounts = [high - low for low, high in zip([0, *cuts], [*cuts, budget], strict=True)]
    return tuple(
        RefundPlan(f"re_{_token(rng)}", piece, _pick(rng, REFUND_HISTORIES)) for piece in amounts
    )


def _play_refunds(b: _Builder, intent: str, refunds: tuple[RefundPlan, ...]) -> None:
    """Each refund's updates in order, refunds interleaved with each other."""
    remaining = [list(refund.statuses) for refund in refunds]
    gap = (HOUR_MS, 3 * DAY_MS)
    while any(remaining):
        index = b.rng.choice([i for i, statuses in enumerate(remaining) if statuses])
        status = remaining[index].pop(0)
        refund = refunds[index]
        b.add(
            "charge.refund.updated",
            gap,
            payment_intent=intent,
            refund_id=refund.refund_id,
            refund_amount=refund.amount,
            refund_status=status,
        )
        gap = (MINUTE_MS, DAY_MS)


# --- one order -----------------------------------------------------------------------------------


def _vary_references(rng: random.Random, events: list[Event], registered: str | None) -> None:
    """How the order is named varies by merchant integration; the amount_received by event."""
    objects = [e["data"]["object"] for e in events if e["type"] != "charge.succeeded"]
    intents = {o["id"] for o in objects if o["object"] == "payment_intent"}
    unnamed = intents == {registered} and rng.random() < UNNAMED_SHARE
    metadata_only = not unnamed and rng.random() < METADATA_ONLY_SHARE
    for obj in objects:
        succeeded = obj["object"] == "payment_intent" and obj["status"] == "succeeded"
        if succeeded and rng.random() < NULL_RECEIVED_SHARE:
            obj["amount_received"] = None
        if unnamed or metadata_only:
            for key in ("merchant_order_id", "client_reference_id"):
                if key in obj:
                    obj[key] = None
        if unnamed and "metadata" in obj:
            obj["metadata"] = {}


def _charged(rng: random.Random, life_cycle: str, amount: int) -> tuple[int, str]:
    if life_cycle == "amount_mismatch":
        return amount + rng.choice([-1, 1]) * rng.randint(1, amount // 2), "EUR"
    if life_cycle == "currency_mismatch":
        return amount, rng.choice(["GBP", "CHF"])  # SOFORT's other currencies
    return amount, "EUR"


def _order(rng: random.Random, order_id: str, start_ms: int) -> OrderPlan:
    life_cycle = _pick(rng, LIFE_CYCLES)
    amount = rng.randrange(100, 50_000) * 5
    charged_amount, charged_currency = _charged(rng, life_cycle, amount)
    b = _Builder(rng, order_id, charged_amount, charged_currency, start_ms, f"cs_{_token(rng)}", [])
    outcome, intent = _payment(b, life_cycle)
    paid = outcome == SUCCEEDED and (charged_amount, charged_currency) == (amount, "EUR")
    refunds = _refund_plans(rng, amount) if paid else ()
    if paid and rng.random() < OUT_OF_SCOPE_SHARE:
        b.out_of_scope(intent)
    _play_refunds(b, intent, refunds)
    first_intent = b.events[0]["data"]["object"]["id"]
    checkout = any(e["type"].startswith("checkout.") for e in b.events)
    registered_intent = first_intent if rng.random() < 0.3 else None
    _vary_references(rng, b.events, registered_intent)
    return OrderPlan(
        order_id=order_id,
        amount=amount,
        currency="EUR",
        life_cycle=life_cycle,
        outcome=outcome,
        charged_amount=charged_amount,
        charged_currency=charged_currency,
        expired_before_payment=life_cycle == "paid_after_expiry",
        refunds=refunds,
        # Merchants that create the PaymentIntent server-side register it with the order.
        registered_payment_intent=registered_intent,
        registered_checkout_session=b.checkout_session if checkout and rng.random() < 0.4 else None,
        events=tuple(b.events),
    )
