"""The ops commands: `orders add|show|list` and `events list|show|replay`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli import render
from service.cli.common import (
    EXIT_FAILED,
    CommandFailed,
    fail,
    load_settings,
    plural,
    print_json,
    run,
)
from service.cli.store_access import in_store, with_store
from service.domain.currency import normalise_currency
from service.domain.event_status import EventStatus
from service.domain.orders import OrderStatus, OrderTerms
from service.operations.registration import register_order
from service.operations.replay import (
    QueueUnavailable,
    ReplayPlan,
    execute_replay,
    plan_replay,
)
from service.queue import create_redis
from service.settings import Settings
from service.store.engine import reading
from service.store.inbox import get_event, list_events
from service.store.orders import OrderExists, OrderView, get_order, list_orders

T = TypeVar("T")
R = TypeVar("R")

# Values, not members: click offers an Enum's names as the choices.
ORDER_STATUSES = tuple(status.value for status in OrderStatus)
EVENT_STATUSES = tuple(status.value for status in EventStatus)


def _currency(_: click.Context, __: click.Parameter, value: str) -> str:
    try:
        return normalise_currency(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.group()
def orders() -> None:
    """Inspect and register orders in the order store."""


@orders.command("add")
@click.argument("order_id")
@click.option("--amount", type=click.IntRange(min=1), required=True, help="In minor units.")
@click.option("--currency", required=True, callback=_currency)
@click.option("--payment-intent", default=None, help="A PaymentIntent id already known.")
@click.option("--checkout-session", default=None, help="A Checkout Session id already known.")
@click.option("--json", "as_json", is_flag=True)
def orders_add(
    order_id: str,
    amount: int,
    currency: str,
    payment_intent: str | None,
    checkout_session: str | None,
    as_json: bool,
) -> None:
    """Register an order (amount in minor units)."""
    terms = OrderTerms(order_id, amount, currency, payment_intent, checkout_session)
    settings = load_settings()
    try:
        view = in_store(settings.database_url, lambda engine: _register(settings, engine, terms))
    except OrderExists:
        fail(f"order {order_id} (or one of its payment links) is already registered")
    if as_json:
        print_json(render.order_json(view))
    else:
        click.echo(f"registered order {order_id}: {amount} {currency}")


@orders.command("show")
@click.argument("order_id")
@click.option("--json", "as_json", is_flag=True)
def orders_show(order_id: str, as_json: bool) -> None:
    """Show one order."""
    view = _reading_store(lambda engine: get_order(engine, order_id))
    _print_one(view, f"unknown order {order_id}", as_json, render.order_json, render.order_text)


@orders.command("list")
@click.option("--status", type=click.Choice(ORDER_STATUSES), default=None)
@click.option("--needs-review", is_flag=True, help="Only orders flagged for review.")
@click.option("--json", "as_json", is_flag=True)
def orders_list(status: str | None, needs_review: bool, as_json: bool) -> None:
    """List orders."""
    views = _reading_store(
        lambda engine: list_orders(engine, status=status, needs_review=needs_review)
    )
    _print_many(views, as_json, render.order_json, render.order_row)


@click.group()
def events() -> None:
    """Inspect recorded events and replay failed ones."""


@events.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES), default=None)
@click.option("--type", "event_type", default=None, help="e.g. charge.refund.updated")
@click.option("--json", "as_json", is_flag=True)
def events_list(status: str | None, event_type: str | None, as_json: bool) -> None:
    """List recorded events."""
    wanted = EventStatus(status) if status is not None else None
    records = _reading_store(
        lambda engine: list_events(engine, status=wanted, event_type=event_type)
    )
    _print_many(records, as_json, render.event_json, render.event_row)


@events.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
def events_show(event_id: str, as_json: bool) -> None:
    """Show one event: type, status, attempts, last error, linked order."""
    record = _reading_store(lambda engine: get_event(engine, event_id))
    _print_one(record, f"unknown event {event_id}", as_json, render.event_json, render.event_text)


@events.command("replay")
@click.argument("event_ids", nargs=-1)
@click.option("--failed", is_flag=True, help="Replay every event parked as failed.")
@click.option("--type", "event_type", default=None, help="Only events of this type.")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed; change nothing.")
def events_replay(
    event_ids: tuple[str, ...], failed: bool, event_type: str | None, dry_run: bool
) -> None:
    """Re-enqueue recorded events (by id, or --failed); print how many."""
    if bool(event_ids) == failed:
        raise click.UsageError("give event ids or --failed (not both)")
    settings = load_settings()
    plan = _reading_store(
        lambda engine: plan_replay(
            engine, event_ids=event_ids, failed=failed, event_type=event_type
        )
    )
    for unknown in plan.unknown_ids:
        click.echo(f"unknown event {unknown}", err=True)
    if dry_run:
        for record in plan.events:
            click.echo(f"would replay {record.event_id} ({record.type}, {record.status})")
        click.echo(f"{plural(len(plan.events), 'event')} would be replayed")
    else:
        replayed = run(with_store(settings.database_url, lambda e: _enqueue(settings, e, plan)))
        click.echo(f"replayed {plural(replayed, 'event')}")
    if plan.unknown_ids:
        raise SystemExit(EXIT_FAILED)


async def _register(settings: Settings, engine: AsyncEngine, terms: OrderTerms) -> OrderView:
    """Register the order and run the events waiting for it (Redis only if one waits)."""
    redis = create_redis(settings.redis_url.reveal())
    try:
        return await register_order(engine, redis, terms, now_ms=int(time.time() * 1000))
    finally:
        await redis.aclose()


async def _enqueue(settings: Settings, engine: AsyncEngine, plan: ReplayPlan) -> int:
    redis = create_redis(settings.redis_url.reveal())
    try:
        return await execute_replay(engine, redis, plan)
    except QueueUnavailable as error:
        raise CommandFailed(
            "Redis is unreachable: the events were reopened as pending and the sweeper will "
            "enqueue them once Redis is back"
        ) from error
    finally:
        await redis.aclose()


def _in_store(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run one piece of work on the configured store (store problems end the command in one
    line, see `cli_store.with_store`)."""
    return in_store(load_settings().database_url, work)


def _reading_store(work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`_in_store` for work that only reads: on SQLite it reads alongside a writer instead of
    waiting for the write lock (see service.store.engine.reading)."""
    return _in_store(lambda engine: work(reading(engine)))


def _print_one(
    found: R | None,
    unknown: str,
    as_json: bool,
    to_json: Callable[[R], object],
    to_text: Callable[[R], str],
) -> None:
    """One order or event, as JSON or text; exit 1 naming it when it is not recorded."""
    if found is None:
        fail(unknown)
    if as_json:
        print_json(to_json(found))
    else:
        click.echo(to_text(found))


def _print_many(
    found: Sequence[R], as_json: bool, to_json: Callable[[R], object], to_row: Callable[[R], str]
) -> None:
    """A list of orders or events: one JSON array, or one text row each."""
    if as_json:
        print_json([to_json(item) for item in found])
    else:
        for item in found:
            click.echo(to_row(item))
