"""Orders, their refunds and their links, as the ops commands and the reconciler see them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.domain.orders import OrderState, OrderTerms, RefundState, initial_state
from service.store.schema import order_links, orders, refunds

LINK_PAYMENT_INTENT = "payment_intent"
LINK_CHECKOUT_SESSION = "checkout_session"


class OrderExists(Exception):
    """`orders add` for an order id (or a payment link) that is already registered."""


@dataclass(frozen=True, slots=True)
class OrderView:
    terms: OrderTerms
    state: OrderState
    updated_ms: int


async def add_order(engine: AsyncEngine, terms: OrderTerms, *, now_ms: int) -> OrderView:
    """Register an order with its expected amount and currency, and any links given."""
    state = initial_state(terms)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(orders).values(
                    order_id=terms.order_id,
                    amount=terms.amount,
                    currency=terms.currency,
                    registered_payment_intent_id=terms.payment_intent_id,
                    registered_checkout_session_id=terms.checkout_session_id,
                    status=state.status,
                    payment_intent_id=state.payment_intent_id,
                    checkout_session_id=state.checkout_session_id,
                    created_ms=now_ms,
                    updated_ms=now_ms,
                )
            )
            await _insert_links(connection, terms)
    except IntegrityError:
        raise OrderExists(terms.order_id) from None
    return OrderView(terms, state, now_ms)


async def _insert_links(connection: AsyncConnection, terms: OrderTerms) -> None:
    for kind, external_id in (
        (LINK_PAYMENT_INTENT, terms.payment_intent_id),
        (LINK_CHECKOUT_SESSION, terms.checkout_session_id),
    ):
        if external_id is not None:
            await connection.execute(
                insert(order_links).values(
                    external_id=external_id, kind=kind, order_id=terms.order_id
                )
            )


async def get_order(engine: AsyncEngine, order_id: str) -> OrderView | None:
    async with engine.connect() as connection:
        views = await _load_views(connection, [order_id])
    return views[0] if views else None


async def list_orders(
    engine: AsyncEngine, *, status: str | None = None, needs_review: bool = False
) -> list[OrderView]:
    query = select(orders.c.order_id).order_by(orders.c.created_ms, orders.c.order_id)
    if status is not None:
        query = query.where(orders.c.status == status)
    if needs_review:
        query = query.where(orders.c.needs_review.is_(True))
    async with engine.connect() as connection:
        order_ids = list((await connection.execute(query)).scalars())
        return await _load_views(connection, order_ids)


async def _load_views(connection: AsyncConnection, order_ids: Sequence[str]) -> list[OrderView]:
    if not order_ids:
        return []
    rows = (
        await connection.execute(select(orders).where(orders.c.order_id.in_(list(order_ids))))
    ).all()
    refund_rows = (
        await connection.execute(
            select(refunds.c.order_id, refunds.c.refund_id, refunds.c.amount, refunds.c.status)
            .where(refunds.c.order_id.in_(list(order_ids)))
            .order_by(refunds.c.refund_id)
        )
    ).all()
    by_order: dict[str, list[RefundState]] = {}
    for order_id, refund_id, amount, status in refund_rows:
        by_order.setdefault(order_id, []).append(RefundState(refund_id, amount, status))
    views = {row.order_id: _view(row, by_order.get(row.order_id, [])) for row in rows}
    return [views[order_id] for order_id in order_ids if order_id in views]


def _view(row: Row[tuple[object, ...]], order_refunds: list[RefundState]) -> OrderView:
    m = row._mapping
    terms = OrderTerms(
        order_id=m["order_id"],
        amount=m["amount"],
        currency=m["currency"],
        payment_intent_id=m["registered_payment_intent_id"],
        checkout_session_id=m["registered_checkout_session_id"],
    )
    state = OrderState(
        status=m["status"],
        amount_received=m["amount_received"],
        amount_refunded=m["amount_refunded"],
        payment_intent_id=m["payment_intent_id"],
        checkout_session_id=m["checkout_session_id"],
        needs_review=bool(m["needs_review"]),
        review_reason=m["review_reason"],
        refunds=tuple(order_refunds),
    )
    return OrderView(terms, state, m["updated_ms"])


# --- used inside the reconciler's transaction -------------------------------------------------


async def existing_order_id(connection: AsyncConnection, candidates: Sequence[str]) -> str | None:
    """The first candidate order id that is registered."""
    for order_id in candidates:
        found = (
            await connection.execute(select(orders.c.order_id).where(orders.c.order_id == order_id))
        ).scalar()
        if found is not None:
            return str(found)
    return None


async def linked_order_id(connection: AsyncConnection, external_ids: Sequence[str]) -> str | None:
    """The order a PaymentIntent or Checkout Session id was linked to, if any."""
    for external_id in external_ids:
        found = (
            await connection.execute(
                select(order_links.c.order_id).where(order_links.c.external_id == external_id)
            )
        ).scalar()
        if found is not None:
            return str(found)
    return None


async def lock_order(connection: AsyncConnection, order_id: str) -> OrderView | None:
    """Load an order for update: other transactions applying events to it wait for ours.

    PostgreSQL locks the row; SQLite's BEGIN IMMEDIATE already holds the database write lock.
    """
    query = select(orders.c.order_id).where(orders.c.order_id == order_id)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    if (await connection.execute(query)).scalar() is None:
        return None
    views = await _load_views(connection, [order_id])
    return views[0] if views else None


async def link(connection: AsyncConnection, order_id: str, kind: str, external_id: str) -> None:
    """Record that an external id belongs to an order; the first link of an id wins."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    await connection.execute(
        dialect.insert(order_links)
        .values(external_id=external_id, kind=kind, order_id=order_id)
        .on_conflict_do_nothing(index_elements=[order_links.c.external_id])
    )


async def save_state(
    connection: AsyncConnection, order_id: str, state: OrderState, *, now_ms: int
) -> None:
    """Write a recomputed projection: the order row and its refunds, replaced whole."""
    await connection.execute(
        update(orders)
        .where(orders.c.order_id == order_id)
        .values(
            status=state.status,
            amount_received=state.amount_received,
            amount_refunded=state.amount_refunded,
            payment_intent_id=state.payment_intent_id,
            checkout_session_id=state.checkout_session_id,
            needs_review=state.needs_review,
            review_reason=state.review_reason,
            version=orders.c.version + 1,
            updated_ms=now_ms,
        )
    )
    await connection.execute(delete(refunds).where(refunds.c.order_id == order_id))
    if state.refunds:
        await connection.execute(
            insert(refunds),
            [
                {
                    "refund_id": refund.refund_id,
                    "order_id": order_id,
                    "amount": refund.amount,
                    "status": refund.status,
                    "updated_ms": now_ms,
                }
                for refund in state.refunds
            ],
        )
