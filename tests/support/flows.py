"""Helpers for reconcile tests: build WooshPay event flows, deliver them, run workers, read state.

Events are plain dicts as `service.devtools.sender.build_event` makes them; deliver them either
straight
into the inbox (`record`) or signed through the ingress (`post_event`), then run a burst worker.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import terminate
from service.devtools.sender import EventOptions, build_event, encode_event
from service.domain.event_status import EventStatus
from service.domain.events import PaymentEvent
from service.domain.orders import OrderState, OrderTerms, project
from service.ingress.app import WEBHOOK_PATH
from service.queue import enqueue_event, replay_job_id_for
from service.settings import Settings
from service.store.inbox import NewEvent, list_events
from service.store.orders import OrderView, add_order, get_order
from service.store.schema import orders
from service.wooshpay.events import parse_envelope, parse_payment_event
from service.wooshpay.signatures import SIGNATURE_HEADER, sign_header
from tests.support import leak_watch
from tests.support.inbox_records import record_event
from tests.support.leaks import add_customer
from tests.support.processes import cli_env
from workers.main import WorkerProcess
from workers.metrics import WorkerMetrics

Event = dict[str, Any]

AMOUNT: Final = 10_000
CURRENCY: Final = "EUR"
# Events of one flow are stamped this far apart, so `created` strictly increases.
STEP_MS: Final = 1_000
# Retry budget for tests that enqueue a whole flow at once: a refund finds its order only once a
# PaymentIntent event has linked it, and retries meanwhile (workers/apply.py); 3 fast attempts
# (the `settings` fixture) could park it as `failed` while the payment still waits in the queue.
PATIENT_ATTEMPTS: Final = 10


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Clock:
    """Hands out strictly increasing `created` timestamps (milliseconds)."""

    at_ms: int

    def tick(self) -> int:
        self.at_ms += STEP_MS
        return self.at_ms


def new_clock(*, hours_ago: float = 1.0) -> Clock:
    return Clock(now_ms() - int(hours_ago * 3_600_000))


def event(clock: Clock, event_type: str, order_id: str, **options: Any) -> Event:
    """One realistic event for `order_id`, stamped with the clock's next timestamp, naming the
    canary customer (tests.support.leaks) where WooshPay names a customer."""
    opts = EventOptions(order_id=order_id, amount=options.pop("amount", AMOUNT), **options)
    return add_customer(build_event(event_type, opts, now_ms=clock.tick()))


def refund(
    clock: Clock, order_id: str, refund_id: str, amount: int, status: str = "succeeded"
) -> Event:
    """A `charge.refund.updated` for refund `refund_id` of the order's PaymentIntent."""
    return event(
        clock,
        "charge.refund.updated",
        order_id,
        refund_id=refund_id,
        refund_amount=amount,
        refund_status=status,
    )


def sofort_payment(clock: Clock, order_id: str, *, amount: int = AMOUNT) -> list[Event]:
    """created -> requires_action (redirect) -> processing -> succeeded."""
    return [
        event(clock, event_type, order_id, amount=amount)
        for event_type in (
            "payment_intent.created",
            "payment_intent.requires_action",
            "payment_intent.processing",
            "payment_intent.succeeded",
        )
    ]


@dataclass(frozen=True)
class SofortFlow:
    """A paid SOFORT order with two partial refunds, then a refund of the remainder."""

    order_id: str
    payment: list[Event]
    partial_refunds: list[Event]  # refund 1 pending then succeeded; refund 2 succeeded
    final_refund: list[Event]  # the remainder, so the order ends fully refunded
    refunded_partially: int  # succeeded amount after `partial_refunds`

    @property
    def up_to_partial(self) -> list[Event]:
        return [*self.payment, *self.partial_refunds]

    @property
    def all_events(self) -> list[Event]:
        return [*self.payment, *self.partial_refunds, *self.final_refund]


def sofort_flow(order_id: str, *, amount: int = AMOUNT) -> SofortFlow:
    clock = new_clock()
    payment = sofort_payment(clock, order_id, amount=amount)
    first, second = 2_500, 1_500
    partial = [
        refund(clock, order_id, f"re_{order_id}_1", first, "pending"),
        refund(clock, order_id, f"re_{order_id}_1", first, "succeeded"),
        refund(clock, order_id, f"re_{order_id}_2", second, "succeeded"),
    ]
    final = [refund(clock, order_id, f"re_{order_id}_3", amount - first - second, "succeeded")]
    return SofortFlow(order_id, payment, partial, final, first + second)


def many_events_flow(order_id: str, *, refunds: int = 23, amount: int = AMOUNT) -> list[Event]:
    """A payment and `refunds` refunds each seen twice (pending, then succeeded or failed)."""
    clock = new_clock()
    flow = sofort_payment(clock, order_id, amount=amount)
    for number in range(refunds):
        refund_id = f"re_{order_id}_{number:02d}"
        final_status = "failed" if number % 3 == 0 else "succeeded"
        flow.append(refund(clock, order_id, refund_id, 100 + number, "pending"))
        flow.append(refund(clock, order_id, refund_id, 100 + number, final_status))
    return flow


def event_ids(events: Iterable[Event]) -> list[str]:
    return [str(e["id"]) for e in events]


# --- the order store ----------------------------------------------------------------------------


def terms(order_id: str, *, amount: int = AMOUNT, currency: str = CURRENCY) -> OrderTerms:
    return OrderTerms(order_id=order_id, amount=amount, currency=currency)


async def register_order(
    engine: AsyncEngine,
    order_id: str,
    *,
    amount: int = AMOUNT,
    currency: str = CURRENCY,
    payment_intent: str | None = None,
) -> OrderTerms:
    """Register the order as `orders add` does (optionally with its PaymentIntent link)."""
    order_terms = OrderTerms(order_id, amount, currency, payment_intent_id=payment_intent)
    await add_order(engine, order_terms, now_ms=now_ms())
    return order_terms


async def order_state(engine: AsyncEngine, order_id: str) -> OrderState:
    view = await get_order(engine, order_id)
    assert view is not None, f"order {order_id} is not registered"
    return view.state


async def order_view(engine: AsyncEngine, order_id: str) -> OrderView:
    view = await get_order(engine, order_id)
    assert view is not None, f"order {order_id} is not registered"
    return view


async def order_version(engine: AsyncEngine, order_id: str) -> int:
    async with engine.connect() as connection:
        version = (
            await connection.execute(select(orders.c.version).where(orders.c.order_id == order_id))
        ).scalar_one()
    return int(version)


def parsed(events: Iterable[Event]) -> list[PaymentEvent]:
    return [parse_payment_event(parse_envelope(encode_event(e))) for e in events]


def expected_state(order_terms: OrderTerms, events: Iterable[Event]) -> OrderState:
    """What the projection says the order must be after the set of `events`."""
    return project(order_terms, parsed(events))


async def statuses(engine: AsyncEngine) -> dict[str, str]:
    """Every recorded event's status, by event id."""
    return {record.event_id: record.status for record in await list_events(engine)}


# --- delivery ------------------------------------------------------------------------------------


async def record(engine: AsyncEngine, events: Iterable[Event]) -> list[bool]:
    """Record events in the inbox as the ingress would (no enqueue); True where new."""
    results = []
    for item in events:
        body = encode_event(item)
        envelope = parse_envelope(body)
        status = EventStatus.PENDING if envelope.in_scope else EventStatus.IGNORED
        results.append(
            await record_event(engine, NewEvent(envelope, body, status), now_ms=now_ms())
        )
    return results


async def enqueue(
    redis: ArqRedis,
    ids: Sequence[str],
    *,
    fresh_job_ids: bool = False,
    defer_s: float | None = None,
) -> int:
    """Enqueue a reconcile job per id; `fresh_job_ids` makes every job distinct (like a replay)."""
    enqueued = 0
    for event_id in ids:
        job_id = replay_job_id_for(event_id) if fresh_job_ids else None
        if await enqueue_event(redis, event_id, job_id=job_id, defer_s=defer_s):
            enqueued += 1
    return enqueued


def signed_headers(body: bytes, secret: str) -> dict[str, str]:
    header = sign_header(body, secret, timestamp=int(time.time()))
    return {SIGNATURE_HEADER: header, "Content-Type": "application/json"}


async def post_event(client: TestClient[Any, Any], item: Event, secret: str) -> dict[str, Any]:
    """POST one signed event to the ingress; return its JSON answer (asserting 200)."""
    body = encode_event(item)
    response = await client.post(WEBHOOK_PATH, data=body, headers=signed_headers(body, secret))
    text = await response.text()
    assert response.status == 200, f"{response.status}: {text}"
    answer: dict[str, Any] = json.loads(text)
    return answer


async def post_events(
    client: TestClient[Any, Any], events: Iterable[Event], secret: str
) -> list[dict[str, Any]]:
    return [await post_event(client, item, secret) for item in events]


async def close_redis(redis: ArqRedis) -> None:
    """Close a client and its connection pool, whoever created the pool."""
    await redis.aclose(close_connection_pool=True)


# --- workers -------------------------------------------------------------------------------------


async def run_burst_worker(
    settings: Settings, queue_name: str, *, metrics: WorkerMetrics | None = None
) -> WorkerProcess:
    """Run one burst worker until its queue is empty; return it (for `jobs_complete`)."""
    process = WorkerProcess(settings, queue_name=queue_name, burst=True, metrics=metrics)
    await process.run()
    return process


def outcome_count(metrics: WorkerMetrics, outcome: str) -> float:
    """How many jobs ended with `outcome` (any event type), from the worker's registry."""
    total = 0.0
    for family in metrics.registry.collect():
        if family.name != "wooshpay_reconcile_outcomes":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") == outcome:
                total += sample.value
    return total


# --- CLI worker processes ----------------------------------------------------------------------

PROJECT_ROOT: Final = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S: Final = 10.0


def cli_worker_command(*, via_uv: bool) -> list[str]:
    """The documented `worker --burst` command, metrics port off.

    `uv run` runs the worker as its child, so a test that must SIGKILL the worker itself
    (not uv) uses `python -m service` from this environment instead (via_uv=False).
    """
    args = ["worker", "--burst", "--metrics-port", "0"]
    uv = shutil.which("uv")
    if not via_uv or uv is None:
        return [sys.executable, "-m", "service", *args]
    # --no-sync: use the environment pytest runs in; never re-sync it under other tests.
    return [uv, "run", "--no-sync", "wooshpay-webhooks", *args]


def worker_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a CLI worker: the test's store, a private Redis, JSON logs at INFO."""
    # Nothing a developer's shell sets may change what the worker runs against.
    return cli_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        RETRY_MAX_ATTEMPTS="3",
        RETRY_BASE_DELAY_SECONDS="0.05",
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
    )


def start_cli_worker(
    env: dict[str, str], log: Path, *, via_uv: bool = True
) -> subprocess.Popen[bytes]:
    """Start a CLI worker writing stdout and stderr to `log`."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            cli_worker_command(via_uv=via_uv),
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )
    leak_watch.watch_file(log, process)
    return process


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Make sure a process we started is gone: SIGTERM (uv forwards it), then SIGKILL."""
    terminate(process, timeout_s=STOP_TIMEOUT_S)


def log_entries(logs: Iterable[Path]) -> list[dict[str, Any]]:
    """The JSON log lines of worker processes (other output, and a line still being written
    by a running process, are skipped)."""
    entries = []
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    entries.append(json.loads(line))
    return entries


def applied_counts(logs: Iterable[Path]) -> dict[str, int]:
    """How often each event was applied (or found stale), according to worker logs."""
    counts: dict[str, int] = {}
    for entry in log_entries(logs):
        if entry.get("event") in ("reconcile.applied", "reconcile.stale"):
            event_id = str(entry["event_id"])
            counts[event_id] = counts.get(event_id, 0) + 1
    return counts
