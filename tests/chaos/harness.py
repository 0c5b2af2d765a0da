"""One chaos run: generate, register, deliver under faults, wait for convergence, verify.

Every wait is a condition with a deadline; the only sleeps are the pacing of deliveries, retries
and faults. Whatever happens, every process the run started is killed and its database dropped.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.orders import OrderTerms
from service.store.orders import add_order
from tests.chaos.delivery import Delivery, DeliveryStats, Sender, plan_deliveries
from tests.chaos.faults import (
    DrainTracker,
    Fault,
    FaultInjector,
    FaultProfile,
    pending_count,
    plan_faults,
)
from tests.chaos.logs import LogSummary, summarise_logs
from tests.chaos.scenario import Scenario, generate
from tests.chaos.system import SECRET, System, SystemOptions
from tests.chaos.verify import IN_SCOPE_TYPES, Verdict, verify
from tests.support import databases

REGISTER_CONCURRENCY: Final = 16
CONVERGE_POLL_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class ChaosConfig:
    orders: int
    window_s: float  # how long the deliveries are spread over
    seed: int
    workdir: Path
    profile: FaultProfile
    concurrency: int = 32
    duplicate_share: float = 0.1
    converge_timeout_s: float = 180.0
    give_up_s: float = 120.0  # a delivery still refused after this long is reported undelivered
    progress_every_s: float | None = None  # print a progress line to stderr this often
    # The services' retry settings: 30 attempts from 0.2 s, so a 10 s outage parks nothing.
    retry_max_attempts: int = 30
    retry_base_delay_s: float = 0.2


@dataclass
class ChaosReport:
    config: ChaosConfig
    events_sent: int = 0
    out_of_scope: int = 0
    deliveries_planned: int = 0
    duplicates_planned: int = 0
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    faults: list[Fault] = field(default_factory=list)
    verdict: Verdict = field(default_factory=Verdict)
    converged_s: float | None = None
    max_pending: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    unclean_stops: list[str] = field(default_factory=list)
    crashed: list[str] = field(default_factory=list)
    deadlocks: int = 0  # PostgreSQL's count for the private database
    logs: LogSummary = field(default_factory=LogSummary)

    @property
    def fault_errors(self) -> list[str]:
        return [f"{f.kind} {f.target}: {f.error}" for f in self.faults if f.error]

    @property
    def ok(self) -> bool:
        return (
            self.verdict.mismatches == 0
            and self.verdict.lost == 0
            and self.verdict.misattributed == 0
            and self.verdict.over_applied == 0
            and not self.stats.undelivered
            and not self.stats.wrong_answers
            and not self.fault_errors
            and not self.crashed
            and not self.logs.leaks
            and self.converged_s is not None
        )


async def register_orders(engine: AsyncEngine, scenario: Scenario) -> None:
    """What the merchant did before any payment: register each order (and known links)."""
    slots = asyncio.Semaphore(REGISTER_CONCURRENCY)
    now_ms = int(time.time() * 1000)

    async def register(terms: OrderTerms) -> None:
        async with slots:
            await add_order(engine, terms, now_ms=now_ms)

    await asyncio.gather(
        *(
            register(
                OrderTerms(
                    plan.order_id,
                    plan.amount,
                    plan.currency,
                    plan.registered_payment_intent,
                    plan.registered_checkout_session,
                )
            )
            for plan in scenario.orders
        )
    )


async def wait_converged(engine: AsyncEngine, deadline_s: float) -> float | None:
    """Seconds until no event is `pending` any more; None when the deadline passed first."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if await pending_count(engine) == 0:
            return time.monotonic() - started
        await asyncio.sleep(CONVERGE_POLL_S)  # poll interval of a deadline-bounded wait
    return None


async def database_deadlocks(engine: AsyncEngine) -> int:
    query = text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


def _answering(faults: Sequence[Fault], stats: DeliveryStats) -> None:
    for fault in faults:
        if fault.started is None or fault.repaired is None:
            continue
        first_ok = stats.first_ok_after(fault.repaired, fault.ports)
        fault.answering_s = fault.ready_s if first_ok is None else first_ok - fault.started


async def _report_progress(
    every_s: float, sender: Sender, tracker: DrainTracker, faults: Sequence[Fault]
) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)  # the progress line's pacing
        stats = sender.stats
        print(
            f"[{time.monotonic() - started:6.1f} s] posts={stats.posts}"
            f" accepted={len(stats.accepted)} pending={tracker.last_pending}"
            f" faults={sum(1 for f in faults if f.started is not None)}",
            file=sys.stderr,
            flush=True,
        )


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings
        self._started = self._lap = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self._timings.pop("total", None)
        self._timings[name] = now - self._lap
        self._timings["total"] = now - self._started
        self._lap = now


async def run_chaos(config: ChaosConfig) -> ChaosReport:
    report = ChaosReport(config)
    clock = _Clock(report.timings)
    scenario = generate(config.orders, seed=config.seed)
    events = [event for _, event in scenario.events()]
    report.events_sent = len(events)
    report.out_of_scope = sum(1 for e in events if e["type"] not in IN_SCOPE_TYPES)
    rng = random.Random(config.seed)
    deliveries = plan_deliveries(events, rng, duplicate_share=config.duplicate_share)
    report.deliveries_planned = sum(delivery.posts for delivery in deliveries)
    report.duplicates_planned = report.deliveries_planned - len(events)
    options = SystemOptions(
        config.workdir,
        retry_max_attempts=config.retry_max_attempts,
        retry_base_delay_s=config.retry_base_delay_s,
    )
    system = System(options, databases.postgres_admin_url())
    try:
        await system.start()
        clock.lap("setup")
        await register_orders(system.require_engine(), scenario)
        clock.lap("register")
        await _deliver_under_faults(config, system, deliveries, rng, report, clock)
        report.crashed = system.crashed()
        report.verdict = await verify(system.require_engine(), scenario, report.stats.accepted)
        await system.stop_services()
        # After the services' connections closed, so every backend has flushed its statistics.
        report.deadlocks = await database_deadlocks(system.require_engine())
        clock.lap("verify_and_stop")
    finally:
        report.unclean_stops = system.unclean_stops
        await system.close()
        report.logs = summarise_logs(system.log_dir)
        clock.lap("teardown")
    return report


async def _deliver_under_faults(
    config: ChaosConfig,
    system: System,
    deliveries: Sequence[Delivery],
    rng: random.Random,
    report: ChaosReport,
    clock: _Clock,
) -> None:
    engine = system.require_engine()
    options = system.options
    report.faults = plan_faults(
        config.window_s, config.profile, rng, workers=options.workers, ingresses=options.ingresses
    )
    sender = Sender(
        system.ingress_ports,
        SECRET,
        concurrency=config.concurrency,
        window_s=config.window_s,
        give_up_s=config.give_up_s,
    )
    assert system.redis is not None
    redis = Redis.from_url(system.redis.url, socket_timeout=2, socket_connect_timeout=1)
    injector = FaultInjector(system, report.faults, redis)
    tracker = DrainTracker(engine, report.faults)
    delivering, tracking_done = asyncio.Event(), asyncio.Event()
    delivering.set()
    tracking = asyncio.create_task(tracker.run(tracking_done))
    progress = (
        asyncio.create_task(
            _report_progress(config.progress_every_s, sender, tracker, report.faults)
        )
        if config.progress_every_s
        else None
    )
    injecting = asyncio.create_task(injector.run(time.monotonic(), delivering))
    try:
        report.stats = await sender.run(deliveries)
        delivering.clear()
        await injecting  # faults under way finish their repair
        clock.lap("delivery")
        report.converged_s = await wait_converged(engine, config.converge_timeout_s)
        clock.lap("convergence")
    finally:
        delivering.clear()
        tracking_done.set()
        if not injecting.done():  # only when the run failed: the teardown kills everything
            injecting.cancel()
        background = [injecting, tracking]
        if progress is not None:
            progress.cancel()
            background.append(progress)
        await asyncio.gather(*background, return_exceptions=True)
        await redis.aclose()
    await tracker.poll()
    report.max_pending = tracker.max_pending
    _answering(report.faults, report.stats)
