"""The chaos soak's command line: `python -m tests.chaos.soak --orders 2000 --seconds 90`.

Prints the figures of the run and exits 1 when anything accepted was lost or any order differs
from the oracle (or a delivery was never accepted, or the system did not converge in time).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests.chaos.faults import CI_PROFILE, KINDS, SOAK_PROFILE, WORKER_KILL, Fault, injected
from tests.chaos.harness import ChaosConfig, ChaosReport, run_chaos


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _max_of(faults: list[Fault], attribute: str) -> tuple[float | None, str]:
    values = [(getattr(f, attribute), f.kind) for f in faults if getattr(f, attribute) is not None]
    if not values:
        return None, "-"
    return max(values)


def _kind_lines(kind: str, faults: list[Fault]) -> Iterator[str]:
    held = max((f.repaired or 0) - (f.started or 0) for f in faults)
    answering, _ = _max_of(faults, "answering_s")
    drained, _ = _max_of(faults, "drained_s")
    yield (
        f"  {kind:<16} held {_seconds(held)}, 2xx again after {_seconds(answering)},"
        f" everything received before the repair processed after {_seconds(drained)} (max)"
    )
    if kind == WORKER_KILL:
        in_flight = max(len(f.in_flight) for f in faults)
        done, _ = _max_of(faults, "in_flight_done_s")
        yield (
            f"  {'':<16} jobs in progress at a kill: up to {in_flight};"
            f" all of them processed after {_seconds(done)} (max)"
        )


def _fault_lines(report: ChaosReport) -> Iterator[str]:
    faults = injected(report.faults)
    counts = Counter(fault.kind for fault in faults)
    yield "faults injected          " + " ".join(f"{kind}={counts[kind]}" for kind in KINDS)
    for kind in KINDS:
        of_kind = [f for f in faults if f.kind == kind]
        if of_kind:
            yield from _kind_lines(kind, of_kind)
    answering, answering_kind = _max_of(faults, "answering_s")
    drained, drained_kind = _max_of(faults, "drained_s")
    yield (
        f"max recovery time        2xx again {_seconds(answering)} ({answering_kind}),"
        f" pending drained {_seconds(drained)} ({drained_kind})"
    )
    for error in report.fault_errors:
        yield f"  FAULT ERROR: {error}"


def figures(report: ChaosReport) -> Iterator[str]:
    config, stats, verdict = report.config, report.stats, report.verdict
    yield (
        f"chaos soak: orders={config.orders} window={config.window_s:g}s seed={config.seed}"
        f" concurrency={config.concurrency} RETRY_MAX_ATTEMPTS={config.retry_max_attempts}"
        f" RETRY_BASE_DELAY_SECONDS={config.retry_base_delay_s:g}"
    )
    yield (
        f"events sent (distinct)   {report.events_sent}"
        f" ({report.out_of_scope} out of scope, to be ignored)"
    )
    retries = stats.posts - report.deliveries_planned
    yield (
        f"deliveries               {stats.posts} ({report.deliveries_planned} planned incl."
        f" {report.duplicates_planned} duplicates, half of them concurrent twins;"
        f" + {retries} retries)"
    )
    yield "answers                  " + " ".join(
        f"{kind}={count}" for kind, count in stats.answers.most_common()
    )
    yield f"accepted (distinct 2xx)  {len(stats.accepted)}"
    yield f"duplicates               {stats.duplicate_answers} answered `duplicate: true`"
    yield f"undelivered              {len(stats.undelivered)}"
    yield from _fault_lines(report)
    yield (
        f"converged                {_seconds(report.converged_s)} after the last delivery"
        f" (max pending {report.max_pending})"
    )
    yield "events by status         " + " ".join(
        f"{status}={count}" for status, count in sorted(verdict.event_statuses.items())
    )
    yield f"orders checked           {verdict.orders_checked}"
    yield f"mismatches               {verdict.mismatches}"
    yield f"lost                     {verdict.lost}"
    yield f"misattributed            {verdict.misattributed}"
    yield f"over-applied             {verdict.over_applied}"
    yield f"database deadlocks       {report.deadlocks}"
    yield "timings                  " + ", ".join(
        f"{name} {value:.1f} s" for name, value in report.timings.items()
    )
    if report.crashed:
        yield "CRASHED                  " + "; ".join(report.crashed)
    if report.unclean_stops:
        yield "unclean stops            " + "; ".join(report.unclean_stops)
    if report.logs.leaks:
        yield "LEAKED IN LOGS           " + "; ".join(report.logs.leaks)
    yield f"service log lines        {report.logs.errors()} at error level; most frequent:"
    yield from (f"  {line}" for line in report.logs.top(12))
    yield from (f"  {line}" for line in verdict.details)
    yield (
        f"replay with            python -m tests.chaos.soak --orders {config.orders}"
        f" --seconds {config.window_s:g} --seed {config.seed}"
        + (" --ci-profile" if config.profile == CI_PROFILE else "")
        + (
            f" --retry-max-attempts {config.retry_max_attempts}"
            f" --retry-base-delay {config.retry_base_delay_s:g}"
            if (config.retry_max_attempts, config.retry_base_delay_s) != (30, 0.2)
            else ""
        )
    )
    yield "RESULT: " + ("OK" if report.ok else "FAILED")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="delivery window, faults happen within it (default: 0.1 s per order, at least 20)",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duplicates", type=float, default=0.1, help="share redelivered")
    parser.add_argument("--converge-timeout", type=float, default=240.0)
    parser.add_argument("--ci-profile", action="store_true", help="the short fault profile")
    parser.add_argument("--retry-max-attempts", type=int, default=30, help="RETRY_MAX_ATTEMPTS")
    parser.add_argument(
        "--retry-base-delay", type=float, default=0.2, help="RETRY_BASE_DELAY_SECONDS"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="logs go here (kept)")
    parser.add_argument(
        "--progress", type=float, default=10.0, help="seconds between progress lines"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-soak-"))
    config = ChaosConfig(
        orders=args.orders,
        window_s=args.seconds if args.seconds is not None else max(20.0, 0.1 * args.orders),
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        workdir=workdir,
        profile=CI_PROFILE if args.ci_profile else SOAK_PROFILE,
        concurrency=args.concurrency,
        duplicate_share=args.duplicates,
        converge_timeout_s=args.converge_timeout,
        progress_every_s=args.progress or None,
        retry_max_attempts=args.retry_max_attempts,
        retry_base_delay_s=args.retry_base_delay,
    )
    report = asyncio.run(run_chaos(config))
    for line in figures(report):
        print(line, flush=True)
    if report.ok and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"logs: {workdir / 'logs'}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
