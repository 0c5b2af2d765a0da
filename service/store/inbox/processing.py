"""The inbox's part of the reconciler's transaction: lock the event, read the order's other
applied events, mark the event `processed` or `ignored`.

Run on the driver connection (service.store.driver.driver_transaction): the reconciler's CPU
per event was mostly SQLAlchemy's per-statement work.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select, update
from sqlalchemy.sql.selectable import CTE

from service.domain.event_status import EventStatus
from service.store.driver import DriverTransaction, Query
from service.store.schema import events


@dataclass(frozen=True, slots=True)
class LockedEvent:
    """A recorded event, its row locked until the transaction ends."""

    status: EventStatus
    type: str
    body: bytes
    received_ms: int


# Two jobs for the same event (a redelivery, a replay, a rerun after a crash) serialise on this
# row lock; the second sees `processed`.
_LOCK_EVENT = Query(
    select(events.c.status, events.c.type, events.c.body, events.c.received_ms)
    .where(events.c.event_id == bindparam("key"))
    .with_for_update()
)
_OTHER_APPLIED_BODIES = Query(
    select(events.c.body).where(
        events.c.order_id == bindparam("order_key"),
        events.c.status == EventStatus.PROCESSED,
        events.c.event_id != bindparam("key"),
    )
)
# The end of an event's processing: its status, the order it was applied to, one more attempt.
# `now_ms` is named as the order store's statements name it, so that one value serves both
# when this runs inside the statement that saves the order (see `mark_processed_cte`).
_MARK_EVENT_STATEMENT = (
    update(events)
    .where(events.c.event_id == bindparam("event_key"))
    .values(
        status=bindparam("event_status"),
        order_id=bindparam("event_order_id"),
        attempts=events.c.attempts + 1,
        updated_ms=bindparam("now_ms"),
        processed_ms=bindparam("now_ms"),
    )
)
_MARK_EVENT = Query(_MARK_EVENT_STATEMENT)


async def lock_event(transaction: DriverTransaction, event_id: str) -> LockedEvent | None:
    """A recorded event, locked: another job for it waits until this transaction ends, then sees
    what this one left. None when the inbox does not hold the id."""
    row = await transaction.fetchone(_LOCK_EVENT, key=event_id)
    if row is None:
        return None
    return LockedEvent(
        EventStatus(row["status"]), row["type"], bytes(row["body"]), row["received_ms"]
    )


async def other_applied_bodies(
    transaction: DriverTransaction, order_id: str, *, excluding_event_id: str
) -> list[bytes]:
    """The bodies of the order's applied (`processed`) events other than the one given."""
    rows = await transaction.fetch(
        _OTHER_APPLIED_BODIES, order_key=order_id, key=excluding_event_id
    )
    return [bytes(row["body"]) for row in rows]


async def mark_processed(
    transaction: DriverTransaction, event_id: str, order_id: str, *, now_ms: int
) -> None:
    """Record that an event was applied to `order_id` (which may have changed nothing)."""
    await transaction.execute(
        _MARK_EVENT, **mark_processed_params(event_id, order_id), now_ms=now_ms
    )


async def mark_ignored(transaction: DriverTransaction, event_id: str, *, now_ms: int) -> None:
    """Record that an event's processing ended without applying it to any order."""
    await transaction.execute(
        _MARK_EVENT,
        event_key=event_id,
        event_status=EventStatus.IGNORED,
        event_order_id=None,
        now_ms=now_ms,
    )


def mark_processed_cte() -> CTE:
    """`mark_processed` as a data-modifying WITH, for the statement that saves the order the
    event was applied to (service.store.orders.save_state): PostgreSQL then marks the event and
    saves the order in one statement, one round trip fewer per event.

    The inbox hands out this fragment rather than a finished statement over both tables: the
    statement that carries it is the order store's, and each module keeps writing only its own
    table's SQL. Bind it with `mark_processed_params`, and `now_ms` (shared with the host
    statement: the event is marked when its order is saved).
    """
    return _MARK_EVENT_STATEMENT.cte("processed_event")


def mark_processed_params(event_id: str, order_id: str) -> dict[str, object]:
    """The bind values of `mark_processed_cte` (and `mark_processed`), but `now_ms`."""
    return {
        "event_key": event_id,
        "event_status": EventStatus.PROCESSED,
        "event_order_id": order_id,
    }
