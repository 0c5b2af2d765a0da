"""Orders, their refunds and their links, as the ops commands and the reconciler see them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.domain.orders import OrderState, OrderTerms, initial_state
from service.domain.refunds import RefundState
from service.store import inbox
from service.store.driver import DriverTransaction, Query
from service.store.engine import reading
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
                    **_projected(state),
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


async def probe_orders_table(connection: AsyncConnection) -> None:
    """Touch the orders table (a constant, at most one row): on a store never migrated this
    fails ("no such table")."""
    await connection.execute(select(literal(1)).select_from(orders).limit(1))


async def order_for_keys(
    engine: AsyncEngine, order_ids: Sequence[str], linked_ids: Sequence[str]
) -> str | None:
    """A registered order an event would find now: one of `order_ids`, or the order one of
    `linked_ids` (PaymentIntent or Checkout Session ids) is linked to; None when there is none
    yet. A read, for the worker's second look after an event did not find its order."""
    queries = []
    if order_ids:
        queries.append(select(orders.c.order_id).where(orders.c.order_id.in_(list(order_ids))))
    if linked_ids:
        queries.append(
            select(orders.c.order_id)
            .join(order_links, order_links.c.order_id == orders.c.order_id)
            .where(order_links.c.external_id.in_(list(linked_ids)))
        )
    async with reading(engine).connect() as connection:
        for query in queries:
            found = (await connection.execute(query.limit(1))).scalar_one_or_none()
            if found is not None:
                return str(found)
    return None


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
    views = {row.order_id: _view(row._mapping, by_order.get(row.order_id, [])) for row in rows}
    return [views[order_id] for order_id in order_ids if order_id in views]


def _view(m: Mapping[Any, Any], order_refunds: list[RefundState]) -> OrderView:
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
#
# The reconciler runs these on the driver connection (service.store.driver.driver_transaction):
# about ten statements per event, each without SQLAlchemy's per-statement work.

_LOCK_ORDER = Query(select(orders).where(orders.c.order_id == bindparam("key")).with_for_update())
# Read after the lock, never joined into it: a SELECT ... FOR UPDATE that waited re-reads the
# locked row but not the rows joined to it, which would be from before the other transaction.
_ORDER_REFUNDS = Query(
    select(refunds.c.refund_id, refunds.c.amount, refunds.c.status)
    .where(refunds.c.order_id == bindparam("key"))
    .order_by(refunds.c.refund_id)
)
_LINKED_ORDER = Query(
    select(order_links.c.order_id).where(order_links.c.external_id == bindparam("key"))
)
_LINK = {
    name: Query(
        dialect.insert(order_links)
        .values(
            external_id=bindparam("new_external_id"),
            kind=bindparam("new_kind"),
            order_id=bindparam("new_order_id"),
        )
        .on_conflict_do_nothing(index_elements=[order_links.c.external_id])
    )
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
# The order columns the projection computes (OrderState's fields of the same names).
_PROJECTED_COLUMNS = (
    "status",
    "amount_received",
    "amount_refunded",
    "payment_intent_id",
    "checkout_session_id",
    "needs_review",
    "review_reason",
)


def _projected(state: OrderState, prefix: str = "") -> dict[str, object]:
    """The projected columns' values of `state`, keyed `prefix + column`."""
    return {prefix + column: getattr(state, column) for column in _PROJECTED_COLUMNS}


_SAVE_ORDER_STATEMENT = (
    update(orders)
    .where(orders.c.order_id == bindparam("key"))
    .values(
        **{column: bindparam(f"new_{column}") for column in _PROJECTED_COLUMNS},
        version=orders.c.version + 1,
        updated_ms=bindparam("now_ms"),
    )
)
_SAVE_ORDER = Query(_SAVE_ORDER_STATEMENT)
# On PostgreSQL an applied event is marked `processed` in the statement that saves its order (a
# data-modifying WITH), one round trip fewer per event; SQLite runs the two apart. The inbox
# writes the event's part (inbox.mark_processed_cte), this module the statement that carries it.
_SAVE_ORDER_AND_MARK_EVENT = Query(_SAVE_ORDER_STATEMENT.add_cte(inbox.mark_processed_cte()))
_DELETE_REFUNDS = Query(delete(refunds).where(refunds.c.order_id == bindparam("key")))
_INSERT_REFUND = Query(
    insert(refunds).values(
        refund_id=bindparam("new_refund_id"),
        order_id=bindparam("new_order_id"),
        amount=bindparam("new_amount"),
        status=bindparam("new_status"),
        updated_ms=bindparam("now_ms"),
    )
)


async def lock_first_order(
    transaction: DriverTransaction, candidates: Sequence[str]
) -> Mapping[str, Any] | None:
    """The row of the first candidate order id that is registered, locked."""
    for order_id in dict.fromkeys(candidates):
        row = await lock_order(transaction, order_id)
        if row is not None:
            return row
    return None


async def linked_order_id(
    transaction: DriverTransaction, external_ids: Sequence[str]
) -> str | None:
    """The order a PaymentIntent or Checkout Session id was linked to, if any."""
    for external_id in external_ids:
        row = await transaction.fetchone(_LINKED_ORDER, key=external_id)
        if row is not None:
            return str(row["order_id"])
    return None


async def lock_order(transaction: DriverTransaction, order_id: str) -> Mapping[str, Any] | None:
    """An order's row, locked: other transactions applying events to it wait for ours.

    PostgreSQL locks the row; SQLite's BEGIN IMMEDIATE already holds the database write lock.
    """
    return await transaction.fetchone(_LOCK_ORDER, key=order_id)


async def order_refunds(transaction: DriverTransaction, order_id: str) -> list[RefundState]:
    rows = await transaction.fetch(_ORDER_REFUNDS, key=order_id)
    return [RefundState(row["refund_id"], row["amount"], row["status"]) for row in rows]


def order_view(row: Mapping[str, Any], order_refunds: list[RefundState]) -> OrderView:
    """An order as loaded by `lock_order` and `order_refunds`."""
    return _view(row, order_refunds)


async def link(transaction: DriverTransaction, order_id: str, kind: str, external_id: str) -> None:
    """Record that an external id belongs to an order; the first link of an id wins."""
    await transaction.execute(
        _LINK[transaction.dialect_name],
        new_external_id=external_id,
        new_kind=kind,
        new_order_id=order_id,
    )


async def save_state(
    transaction: DriverTransaction,
    order: OrderView,
    state: OrderState,
    *,
    now_ms: int,
    processed_event_id: str,
) -> None:
    """Write a recomputed projection (the order row, and its refunds when they changed), and
    mark the event that led to it `processed`."""
    order_id = order.terms.order_id
    if transaction.dialect_name == "postgresql":
        save = _SAVE_ORDER_AND_MARK_EVENT
    else:
        await inbox.mark_processed(transaction, processed_event_id, order_id, now_ms=now_ms)
        save = _SAVE_ORDER
    await transaction.execute(
        save,
        **inbox.mark_processed_params(processed_event_id, order_id),
        key=order_id,
        **_projected(state, prefix="new_"),
        now_ms=now_ms,
    )
    if state.refunds == order.state.refunds:
        return
    # Replaced whole, as the projection computes them whole.
    await transaction.execute(_DELETE_REFUNDS, key=order_id)
    for refund in state.refunds:
        await transaction.execute(
            _INSERT_REFUND,
            new_refund_id=refund.refund_id,
            new_order_id=order_id,
            new_amount=refund.amount,
            new_status=refund.status,
            now_ms=now_ms,
        )
