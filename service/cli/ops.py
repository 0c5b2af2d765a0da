"""The ops commands: `orders add|show|list` and `events list|show|replay`."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
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
from service.domain.orders import OrderTerms
from service.operations.replay import ReplayPlan, execute_replay, plan_replay
from service.queue import QUEUE_ERRORS, create_redis
from service.settings import Settings
from service.store.inbox import get_event, list_events
from service.store.orders import OrderExists, add_order, get_order, list_orders
from service.store.schema import EVENT_STATUSES

T = TypeVar("T")

ORDER_STATUSES = (
    "pending",
    "requires_action",
    "processing",
    "paid",
    "payment_failed",
    "canceled",
    "expired",
    "partially_refunded",
    "refunded",
)


def _currency(_: click.Context, __: click.Parameter, value: str) -> str:
    if len(value) != 3 or not value.isascii() or not value.isalpha():
        raise click.BadParameter("must be a three-letter currency code, e.g. EUR")
    return value.upper()


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
    try:
        view = _in_store(lambda engine: add_order(engine, terms, now_ms=int(time.time() * 1000)))
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
    view = _in_store(lambda engine: get_order(engine, order_id))
    if view is None:
        fail(f"unknown order {order_id}")
    if as_json:
        print_json(render.order_json(view))
    else:
        click.echo(render.order_text(view))


@orders.command("list")
@click.option("--status", type=click.Choice(ORDER_STATUSES), default=None)
@click.option("--needs-review", is_flag=True, help="Only orders flagged for review.")
@click.option("--json", "as_json", is_flag=True)
def orders_list(status: str | None, needs_review: bool, as_json: bool) -> None:
    """List orders."""
    views = _in_store(lambda engine: list_orders(engine, status=status, needs_review=needs_review))
    if as_json:
        print_json([render.order_json(view) for view in views])
    else:
        for view in views:
            click.echo(render.order_row(view))


@click.group()
def events() -> None:
    """Inspect recorded events and replay failed ones."""


@events.command("list")
@click.option("--status", type=click.Choice(EVENT_STATUSES), default=None)
@click.option("--type", "event_type", default=None, help="e.g. charge.refund.updated")
@click.option("--json", "as_json", is_flag=True)
def events_list(status: str | None, event_type: str | None, as_json: bool) -> None:
    """List recorded events."""
    records = _in_store(lambda engine: list_events(engine, status=status, event_type=event_type))
    if as_json:
        print_json([render.event_json(record) for record in records])
    else:
        for record in records:
            click.echo(render.event_row(record))


@events.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True)
def events_show(event_id: str, as_json: bool) -> None:
    """Show one event: type, status, attempts, last error, linked order."""
    record = _in_store(lambda engine: get_event(engine, event_id))
    if record is None:
        fail(f"unknown event {event_id}")
    if as_json:
        print_json(render.event_json(record))
    else:
        click.echo(render.event_text(record))


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
    plan = _in_store(
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


async def _enqueue(settings: Settings, engine: AsyncEngine, plan: ReplayPlan) -> int:
    redis = create_redis(settings.redis_url.reveal())
    try:
        return await execute_replay(engine, redis, plan)
    except QUEUE_ERRORS as error:
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
