"""Reconcile: events/s applied by `worker --burst` processes next to an arq no-op job with the
same worker settings, both draining the same number of jobs released at one moment (the gate)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.bench import infra
from tests.bench.backlog import (
    enqueue_gated,
    record_events,
    register_orders,
    wait_until_settled,
)
from tests.bench.load import ORDER_FLOW, order_ids

# Time for the worker processes to start (imports, connections) before the jobs become runnable.
GATE_S: Final = 4.0
TIMEOUT_S: Final = 120.0


@dataclass(frozen=True)
class ReconcileRun:
    target: str  # "noop", "sqlite" or "postgres"
    workers: int
    events: int
    seconds: float
    counts: dict[str, int]
    cpu_us_per_event: float
    peak_rss_kib: int
    late_start: bool  # a worker started after the gate: its start-up counts against it

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ReconcileBench:
    workdir: Path
    redis_url: str
    events: int

    def ours(self, store: infra.Store, workers: int) -> ReconcileRun:
        infra.flush_redis(self.redis_url)
        orders = order_ids("rc_", max(self.events // len(ORDER_FLOW), 1))
        asyncio.run(register_orders(store.url, orders))
        event_ids = asyncio.run(record_events(store.url, self.events, orders))
        gate_ms = self._gate(event_ids)
        procs = [
            infra.start_cli(
                f"worker-{store.kind}{index}",
                ["worker", "--burst", "--metrics-port", "0"],
                env=infra.service_env(store.url, self.redis_url),
                workdir=self.workdir,
            )
            for index in range(workers)
        ]
        try:
            late = _wait_for_start(procs, gate_ms)
            for proc in procs:
                proc.mark_cpu("gate")
            ended, counts = asyncio.run(
                wait_until_settled(
                    store.url, self.events, timeout_s=TIMEOUT_S, on_tick=lambda: _sample(procs)
                )
            )
            for proc in procs:
                proc.mark_cpu("end")
        finally:
            for proc in procs:
                proc.stop()
        return ReconcileRun(
            target=store.kind,
            workers=workers,
            events=self.events,
            seconds=ended - gate_ms / 1000,
            counts=counts,
            cpu_us_per_event=_cpu_us(procs, self.events),
            peak_rss_kib=max(proc.peak_rss_kib for proc in procs),
            late_start=late,
        )

    def noop(self, workers: int) -> ReconcileRun:
        infra.flush_redis(self.redis_url)
        gate_ms = self._gate([f"evt_noop_{index}" for index in range(self.events)])
        env = infra.service_env(f"sqlite:///{self.workdir / 'unused.db'}", self.redis_url)
        procs = [
            infra.start(
                f"noop{index}",
                [sys.executable, "-m", "tests.bench.noop_worker"],
                env=env,
                workdir=self.workdir,
            )
            for index in range(workers)
        ]
        try:
            late = _wait_for_start(procs, gate_ms)
            deadline = time.monotonic() + TIMEOUT_S
            while any(proc.running() for proc in procs) and time.monotonic() < deadline:
                _sample(procs)
                time.sleep(0.02)
        finally:
            for proc in procs:
                proc.stop()
        reports = [_noop_report(proc) for proc in procs]
        jobs = sum(report.jobs for report in reports)
        last_end_ms = max(report.last_end_ms for report in reports)
        cpu_s = sum(report.cpu_s for report in reports)
        return ReconcileRun(
            target="noop",
            workers=workers,
            events=jobs,
            seconds=(last_end_ms - gate_ms) / 1000,
            counts={"done": jobs},
            cpu_us_per_event=cpu_s * 1e6 / max(jobs, 1),
            peak_rss_kib=max(proc.peak_rss_kib for proc in procs),
            late_start=late,
        )

    def _gate(self, event_ids: list[str]) -> int:
        gate_ms = int((time.time() + GATE_S) * 1000)
        asyncio.run(enqueue_gated(self.redis_url, event_ids, gate_ms=gate_ms))
        return gate_ms


def _wait_for_start(procs: list[infra.Proc], gate_ms: int) -> bool:
    """Wait for every worker to start polling, then for the gate; True if one was late."""
    for proc in procs:
        infra.wait_log(proc, "Starting worker")
    late = time.time() * 1000 > gate_ms
    while time.time() * 1000 < gate_ms:
        _sample(procs)
        time.sleep(0.01)
    return late


def _sample(procs: list[infra.Proc]) -> None:
    for proc in procs:
        proc.sample()


def _cpu_us(procs: list[infra.Proc], events: int) -> float:
    return sum(proc.cpu_between("gate", "end") for proc in procs) * 1e6 / max(events, 1)


@dataclass(frozen=True)
class NoopReport:
    jobs: int
    last_end_ms: int
    cpu_s: float


def _noop_report(proc: infra.Proc) -> NoopReport:
    for line in proc.stderr_text().splitlines():
        if line.startswith("NOOP "):
            raw = json.loads(line.removeprefix("NOOP "))
            return NoopReport(int(raw["jobs"]), int(raw["last_end_ms"]), float(raw["cpu_s"]))
    raise RuntimeError(f"{proc.name} printed no report:\n{proc.stderr_text()[-3000:]}")
