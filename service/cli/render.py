"""The documented JSON shapes of orders and events, and their plain-text forms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from service.store.inbox import EventRecord
from service.store.orders import OrderView


def iso_time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def order_json(view: OrderView) -> dict[str, Any]:
    state = view.state
    return {
        "order_id": view.terms.order_id,
        "amount": view.terms.amount,
        "currency": view.terms.currency,
        "status": state.status,
        "amount_received": state.amount_received,
        "amount_refunded": state.amount_refunded,
        "payment_intent_id": state.payment_intent_id,
        "checkout_session_id": state.checkout_session_id,
        "needs_review": state.needs_review,
        "review_reason": state.review_reason,
        "refunds": [
            {"refund_id": r.refund_id, "amount": r.amount, "status": r.status}
            for r in state.refunds
        ],
        "updated_at": iso_time(view.updated_ms),
    }


def event_json(record: EventRecord) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "type": record.type,
        "status": record.status,
        "attempts": record.attempts,
        "last_error": record.last_error,
        "order_id": record.order_id,
        "received_at": iso_time(record.received_ms),
    }


def order_text(view: OrderView) -> str:
    data = order_json(view)
    lines = [f"{key}: {_plain(value)}" for key, value in data.items() if key != "refunds"]
    lines += [
        f"refund {r['refund_id']}: {r['amount']} {data['currency']} {r['status']}"
        for r in data["refunds"]
    ]
    return "\n".join(lines)


def event_text(record: EventRecord) -> str:
    return "\n".join(f"{key}: {_plain(value)}" for key, value in event_json(record).items())


def order_row(view: OrderView) -> str:
    s = view.state
    review = "  needs review" if s.needs_review else ""
    return (
        f"{view.terms.order_id}\t{s.status}\t{view.terms.amount} {view.terms.currency}"
        f"\treceived {s.amount_received}\trefunded {s.amount_refunded}{review}"
    )


def event_row(record: EventRecord) -> str:
    return (
        f"{record.event_id}\t{record.type}\t{record.status}\tattempts {record.attempts}"
        f"\t{record.order_id or '-'}\t{iso_time(record.received_ms)}"
    )


def _plain(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
