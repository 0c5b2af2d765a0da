"""End to end: accepted -> applied latency at a fixed offered load, from the inbox's own clocks
(`received_ms` when the batch holding the event was recorded, `processed_ms` when the worker
applied it), with one ingress and one worker process running as in production."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import select

from service.devtools.local_redis import free_port
from service.store.engine import create_engine
from service.store.schema import events
from tests.bench import infra
from tests.bench.backlog import register_orders
from tests.bench.load import ORDER_FLOW, Wrk, WrkResult, order_ids, write_requests

CALIBRATION_S: Final = 3.0
DRAIN_TIMEOUT_S: Final = 20.0
# Each connection sends one request per ~this many ms, so response time barely moves the rate.
CONNECTION_PERIOD_MS: Final = 40
MIN_CONNECTIONS: Final = 8


@dataclass(frozen=True)
class E2eRun:
    target: str
    load: str  # what the offered rate is half of
    target_rate: float
    offered: WrkResult
    latencies_ms: list[int]
    unfinished: int  # accepted in the window but not applied within DRAIN_TIMEOUT_S
    peak_rss_kib: dict[str, int]

    @property
    def events(self) -> int:
        return len(self.latencies_ms) + self.unfinished

    def percentile(self, fraction: float) -> float | None:
        """The latency at `fraction`, None when it falls on an event not applied in time."""
        index = min(int(fraction * self.events), self.events - 1)
        if index < 0 or index >= len(self.latencies_ms):
            return None
        return float(sorted(self.latencies_ms)[index])


@dataclass
class E2eBench:
    workdir: Path
    redis_url: str
    duration_s: float

    def run(self, store: infra.Store, rate: float, load: str) -> E2eRun:
        infra.flush_redis(self.redis_url)
        connections = max(MIN_CONNECTIONS, round(rate * CONNECTION_PERIOD_MS / 1000))
        count = int(rate * (CALIBRATION_S + self.duration_s) * 1.3) + 2 * connections
        orders = order_ids("e2e_", max(count // len(ORDER_FLOW), 1))
        asyncio.run(register_orders(store.url, orders))
        data = self.workdir / "e2e.txt"
        write_requests(data, count, orders=orders, secret=infra.SECRET)
        port = free_port()
        env = infra.service_env(store.url, self.redis_url)
        serve = infra.start_cli(
            f"e2e-serve-{store.kind}",
            ["serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            workdir=self.workdir,
            cpu="0",
        )
        worker = infra.start_cli(
            f"e2e-worker-{store.kind}",
            ["worker", "--metrics-port", "0"],
            env=env,
            workdir=self.workdir,
        )
        wrk = Wrk(self.workdir / "paced.lua", connections, "1")
        url = f"http://127.0.0.1:{port}"
        try:
            infra.wait_http(f"{url}/healthz", serve)
            infra.wait_log(worker, "Starting worker")
            offered, window = _paced(wrk, url, data, rate, self.duration_s)
            latencies, unfinished = asyncio.run(
                _latencies(store.url, window, on_tick=lambda: _sample(serve, worker))
            )
        finally:
            serve.stop()
            worker.stop()
        return E2eRun(
            target=store.kind,
            load=load,
            target_rate=rate,
            offered=offered,
            latencies_ms=latencies,
            unfinished=unfinished,
            peak_rss_kib={"ingress": serve.peak_rss_kib, "worker": worker.peak_rss_kib},
        )


def _sample(*procs: infra.Proc) -> None:
    for proc in procs:
        proc.sample()


def _paced(
    wrk: Wrk, url: str, data: Path, rate: float, duration_s: float
) -> tuple[WrkResult, tuple[int, int]]:
    """Calibrate the per-connection pause so the achieved rate is `rate`, then the measured run;
    returns it and its window (epoch ms) for selecting the events it sent."""
    period_ms = wrk.connections * 1000 / rate
    calibration = wrk.run(url, data, duration_s=CALIBRATION_S, delay_ms=round(period_ms))
    # Achieved rate = connections / (response time + pause): solve for the response time.
    response_ms = wrk.connections * 1000 / max(calibration.rate, 1.0) - round(period_ms)
    pause_ms = max(round(period_ms - max(response_ms, 0.0)), 1)
    started = int(time.time() * 1000)
    skip = calibration.requests + wrk.connections
    result = wrk.run(url, data, duration_s=duration_s, skip=skip, delay_ms=pause_ms)
    return result, (started, int(time.time() * 1000))


async def _latencies(
    database_url: str, window: tuple[int, int], *, on_tick: Callable[[], None]
) -> tuple[list[int], int]:
    """Wait until the window's events are applied (or the drain timeout); their latencies."""
    engine = create_engine(database_url)
    query = select(events.c.status, events.c.received_ms, events.c.processed_ms).where(
        events.c.received_ms >= window[0], events.c.received_ms <= window[1]
    )
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        async with engine.connect() as connection:
            while True:
                rows = (await connection.execute(query)).all()
                await connection.rollback()
                pending = sum(1 for row in rows if row.status == "pending")
                if not pending or time.monotonic() > deadline:
                    break
                on_tick()
                await asyncio.sleep(0.2)
    finally:
        await engine.dispose()
    latencies = [
        row.processed_ms - row.received_ms
        for row in rows
        if row.status == "processed" and row.processed_ms is not None
    ]
    return latencies, pending
