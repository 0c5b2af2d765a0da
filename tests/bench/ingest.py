"""Ingest: accepted events/s of `serve` next to a bare aiohttp handler, under the same wrk."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sqlalchemy import func, select

from service.devtools.local_redis import free_port
from service.store.engine import create_engine
from service.store.schema import events
from tests.bench import infra
from tests.bench.load import Wrk, WrkResult, order_ids, write_requests
from tests.support.processes import cli_env

CONNECTIONS: Final = 32
WARMUP_S: Final = 2.0
# Upper bound on the accepted rate, to size each data file so that no event id repeats.
MAX_RATE: Final = 9000
SERVER_CPU: Final = "0"
LOAD_CPU: Final = "1"


@dataclass(frozen=True)
class IngestRun:
    target: str  # "bare", "sqlite" or "postgres"
    processes: int
    wrk: WrkResult
    recorded: int | None  # inbox rows after the run (ours only)
    cpu_us_per_request: float
    peak_rss_kib: int
    wrapped: bool  # the data file ran out and ids repeated: the rate flatters us

    @property
    def rate(self) -> float:
        return self.wrk.rate


@dataclass
class IngestBench:
    workdir: Path
    redis_url: str
    duration_s: float
    data: Path | None = None

    def prepare_data(self) -> Path:
        """A fresh data file (new ids, current `t`) big enough for a warm-up and a run."""
        path = self.workdir / "ingest.txt"
        count = int((WARMUP_S + self.duration_s) * MAX_RATE)
        write_requests(path, count, orders=order_ids("ingest_", 5000), secret=infra.SECRET)
        self.data = path
        return path

    def bare(self, processes: int) -> IngestRun:
        data = self.data or self.prepare_data()
        port = free_port()
        procs = [
            infra.start(
                f"bare{index}",
                [sys.executable, "-m", "tests.bench.bare_app", str(port)],
                env=cli_env(),
                workdir=self.workdir,
                cpu=SERVER_CPU if processes == 1 else None,
            )
            for index in range(processes)
        ]
        return self._measure("bare", procs, processes, port, data, rows=None)

    def handler_only(self, store: infra.Store) -> IngestRun:
        """Our ingress, one process, with an inbox writer that records nothing (the ceiling)."""
        data = self.prepare_data()
        port = free_port()
        proc = infra.start(
            "handler",
            [sys.executable, "-m", "tests.bench.handler_app", str(port)],
            env=infra.service_env(store.url, self.redis_url),
            workdir=self.workdir,
            cpu=SERVER_CPU,
        )
        return self._measure("handler", [proc], 1, port, data, rows=None)

    def ours(self, store: infra.Store, processes: int) -> IngestRun:
        data = self.prepare_data()
        infra.flush_redis(self.redis_url)
        port = free_port()
        proc = infra.start_cli(
            f"serve-{store.kind}",
            ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)],
            env=infra.service_env(store.url, self.redis_url),
            workdir=self.workdir,
            cpu=SERVER_CPU if processes == 1 else None,
        )
        infra.wait_log(proc, "ingress.starting", count=processes)
        return self._measure(
            store.kind, [proc], processes, port, data, rows=lambda: _rows(store.url)
        )

    def _measure(
        self,
        target: str,
        procs: list[infra.Proc],
        processes: int,
        port: int,
        data: Path,
        *,
        rows: Callable[[], int] | None,
    ) -> IngestRun:
        """Warm up, then one measured wrk run; one process is pinned to CPU 0 and wrk to CPU 1,
        two processes (and wrk) are left to the scheduler."""
        url = f"http://127.0.0.1:{port}"
        wrk = Wrk(self.workdir / "flat.lua", CONNECTIONS, LOAD_CPU if processes == 1 else None)
        try:
            for proc in procs:
                infra.wait_http(f"{url}/healthz", proc)
            warm = wrk.run(url, data, duration_s=WARMUP_S)
            for proc in procs:
                proc.mark_cpu("start")
            skip = warm.requests + CONNECTIONS
            result = wrk.run(url, data, duration_s=self.duration_s, skip=skip)
            for proc in procs:
                proc.mark_cpu("end")
        finally:
            for proc in procs:
                proc.stop()
        cpu_s = sum(proc.cpu_between("start", "end") for proc in procs)
        with data.open() as lines:
            available = sum(1 for _ in lines)
        return IngestRun(
            target=target,
            processes=processes,
            wrk=result,
            recorded=rows() if rows is not None else None,
            cpu_us_per_request=cpu_s * 1e6 / max(result.requests, 1),
            peak_rss_kib=max(proc.peak_rss_kib for proc in procs),
            wrapped=rows is not None and skip + result.requests > available,
        )


def _rows(url: str) -> int:
    async def count() -> int:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                query = select(func.count()).select_from(events)
                return int((await connection.execute(query)).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())
