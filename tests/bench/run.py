"""`python -m tests.bench`: run every measurement, print the report and keep it in
tests/bench/results/<date>-<time>.md. Baselines are measured in the same run, next to what they
are compared with, so a busy machine moves both and the ratios stay meaningful."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

from service.devtools.local_redis import start_local_redis
from tests.bench import infra, machine
from tests.bench.e2e import E2eBench
from tests.bench.ingest import CONNECTIONS, WARMUP_S, IngestBench
from tests.bench.load import ORDER_FLOW, write_scripts
from tests.bench.reconcile import ReconcileBench
from tests.bench.report import Results, render

RESULTS_DIR: Final = Path(__file__).parent / "results"
PHASES: Final = ("ingest", "reconcile", "e2e")
STORES: Final = ("sqlite", "postgres")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--phases", default=",".join(PHASES), help="ingest,reconcile,e2e")
    parser.add_argument("--stores", default=",".join(STORES), help="sqlite,postgres")
    parser.add_argument("--processes", default="1,2", help="ingress/worker process counts")
    parser.add_argument("--duration", type=int, default=8, help="seconds per ingest run")
    # 6000: at ~500 events/s a run lasts ~12 s; with 3000, a few seconds of a busy neighbour on
    # this shared VM moved the no-op baseline by a quarter within one benchmark.
    parser.add_argument("--events", type=int, default=6000, help="events per reconcile run")
    parser.add_argument("--e2e-duration", type=int, default=10, help="seconds of paced load")
    parser.add_argument(
        "--e2e-rate", type=float, default=None, help="offered ev/s (default: half the peak)"
    )
    parser.add_argument("--label", default="", help="a note for the report's title")
    parser.add_argument("--no-save", action="store_true", help="print only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (scripts/bench does it when allowed)")
    started = datetime.now()
    clock = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="wooshpay-bench-"))
    redis = start_local_redis()
    try:
        with _stores(args.stores.split(","), workdir) as stores:
            results = _run(args, workdir, redis.url, stores)
    finally:
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results.machine.append(("benchmark run time", f"{time.monotonic() - clock:.0f} s"))
    label = f" ({args.label})" if args.label else ""
    report = render(results, title=f"wooshpay-webhooks benchmark {started:%Y-%m-%d %H:%M}{label}")
    print(report)
    if not args.no_save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{started:%Y-%m-%d-%H%M%S}.md"
        path.write_text(report)
        print(f"saved {path}")


@contextlib.contextmanager
def _stores(wanted: list[str], workdir: Path) -> Iterator[dict[str, infra.Store]]:
    stores: dict[str, infra.Store] = {}
    if "sqlite" in wanted:
        stores["sqlite"] = infra.fresh_sqlite(workdir)
    if "postgres" not in wanted:
        yield stores
        return
    if not infra.postgres_available():
        print("PostgreSQL not reachable (TEST_POSTGRES_URL): its rows are skipped", file=sys.stderr)
        yield stores
        return
    with infra.private_postgres() as postgres:
        stores["postgres"] = postgres
        yield stores


def _run(
    args: argparse.Namespace, workdir: Path, redis_url: str, stores: dict[str, infra.Store]
) -> Results:
    write_scripts(workdir)
    processes = [int(count) for count in args.processes.split(",")]
    phases = args.phases.split(",")
    results = Results(settings=_settings(args))
    results.machine = machine.describe(redis_url)
    results.load_before = machine.load_average()
    if "ingest" in phases:
        _ingest(IngestBench(workdir, redis_url, args.duration), stores, processes, results)
    if "reconcile" in phases:
        bench = ReconcileBench(workdir, redis_url, args.events)
        _reconcile(bench, stores, processes, results)
    if "e2e" in phases:
        _e2e(E2eBench(workdir, redis_url, args.e2e_duration), stores, args.e2e_rate, results)
    results.load_after = machine.load_average()
    return results


def _settings(args: argparse.Namespace) -> dict[str, str]:
    return {
        "ingest": f"wrk -t1 -c{CONNECTIONS}, {args.duration} s after a {WARMUP_S:g} s warm-up,"
        " ~1 KB signed events, every event id new; JSON logs at INFO and metrics on",
        "reconcile": f"{args.events} recorded events ({len(ORDER_FLOW)} per order), queued"
        " and released at once to `worker --burst` processes; the no-op job runs under the"
        " same worker settings",
        "e2e": "one ingress (CPU 0) and one worker process, wrk paced (CPU 1) at half the"
        f" peak one-process ingest rate for {args.e2e_duration} s; latency = processed_ms -"
        " received_ms of every event sent",
    }


def _log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S} load {machine.load_average()}] {message}", file=sys.stderr)


def _ingest(
    bench: IngestBench, stores: dict[str, infra.Store], processes: list[int], results: Results
) -> None:
    for count in processes:
        _log(f"ingest: bare aiohttp, {count} process(es)")
        results.ingest.append(bench.bare(count))
        for kind, store in stores.items():
            stores[kind] = infra.reset(store, bench.workdir)
            _log(f"ingest: {kind}, {count} process(es)")
            results.ingest.append(bench.ours(stores[kind], count))
        if count == 1 and stores:
            _log("ingest: our handler without inbox or queue, 1 process")
            results.ingest.append(bench.handler_only(next(iter(stores.values()))))
        _log(f"ingest: bare aiohttp, {count} process(es) again")
        results.ingest.append(bench.bare(count))


def _reconcile(
    bench: ReconcileBench, stores: dict[str, infra.Store], processes: list[int], results: Results
) -> None:
    for count in processes:
        _log(f"reconcile: arq no-op, {count} worker(s)")
        results.reconcile.append(bench.noop(count))
        for kind, store in stores.items():
            stores[kind] = infra.reset(store, bench.workdir)
            _log(f"reconcile: {kind}, {count} worker(s)")
            results.reconcile.append(bench.ours(stores[kind], count))
        _log(f"reconcile: arq no-op, {count} worker(s) again")
        results.reconcile.append(bench.noop(count))


def _e2e(
    bench: E2eBench, stores: dict[str, infra.Store], rate: float | None, results: Results
) -> None:
    """At half the peak one-process ingest rate (the target), and, for scale, at half the rate
    one worker process applies (a load it keeps up with)."""
    for kind, store in stores.items():
        for load, offered in _e2e_loads(kind, rate, results):
            stores[kind] = infra.reset(store, bench.workdir)
            _log(f"e2e: {kind} at {offered:,.0f} ev/s ({load})")
            results.e2e.append(bench.run(stores[kind], offered, load))


def _e2e_loads(kind: str, rate: float | None, results: Results) -> list[tuple[str, float]]:
    if rate is not None:
        return [("as given", rate)]
    ingest = [run.rate for run in results.ingest if run.target == kind and run.processes == 1]
    applied = [run.rate for run in results.reconcile if run.target == kind and run.workers == 1]
    loads = []
    if ingest:
        loads.append(("half peak ingest", max(ingest) / 2))
    else:
        results.notes.append(f"end to end on {kind}: no ingest peak measured (use --e2e-rate)")
    if applied:
        loads.append(("half 1-worker apply rate", max(applied) / 2))
    return loads
