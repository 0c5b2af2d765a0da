"""The benchmark's markdown report: one table per measurement, each next to its baseline and
target, and the machine it ran on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from tests.bench.e2e import DRAIN_TIMEOUT_S, E2eRun
from tests.bench.ingest import IngestRun
from tests.bench.reconcile import ReconcileRun

INGEST_TARGETS: Final = {"postgres": 0.40, "sqlite": 0.30}
RECONCILE_TARGETS: Final = {"postgres": 0.50}
E2E_P99_TARGET_MS: Final = 50.0
RSS_TARGET_MIB: Final = 120.0
STORE_NAMES: Final = {
    "sqlite": "SQLite",
    "postgres": "PostgreSQL",
    "handler": "none: handler only (ceiling)",
}


@dataclass
class Results:
    settings: dict[str, str]
    machine: list[tuple[str, str]] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""
    ingest: list[IngestRun] = field(default_factory=list)
    reconcile: list[ReconcileRun] = field(default_factory=list)
    e2e: list[E2eRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def render(results: Results, *, title: str) -> str:
    sections = [
        f"# {title}",
        _machine(results),
        _ingest(results.ingest, results.settings),
        _reconcile(results.reconcile, results.settings),
        _e2e(results.e2e, results.settings),
        _memory(results),
    ]
    if results.notes:
        sections.append("Notes:\n\n" + "\n".join(f"- {note}" for note in results.notes))
    return "\n\n".join(section for section in sections if section) + "\n"


def _machine(results: Results) -> str:
    rows = [*results.machine, ("load average (1/5/15 min)", _load(results))]
    return _table(["machine", ""], [[name, value] for name, value in rows])


def _load(results: Results) -> str:
    return f"{results.load_before} before, {results.load_after} after"


def _verdict(value: float, target: float | None, *, at_least: bool = True) -> str:
    if target is None:
        return "-"
    met = value >= target if at_least else value < target
    return f"{'met' if met else 'NOT met'} ({'>=' if at_least else '<'} {target:g})"


def _mean_rate(runs: Sequence[IngestRun | ReconcileRun]) -> float:
    return sum(run.rate for run in runs) / len(runs) if runs else 0.0


def _ingest(runs: list[IngestRun], settings: dict[str, str]) -> str:
    if not runs:
        return ""
    header = [
        "store",
        "ingress procs",
        "accepted ev/s",
        "bare aiohttp req/s",
        "ratio",
        "target (ratio)",
        "p50 / p99 ms",
        "bare p50 / p99 ms",
        "CPU us/ev (bare)",
        "peak RSS MiB",
    ]
    rows = []
    for run in (run for run in runs if run.target != "bare"):
        bare = [b for b in runs if b.target == "bare" and b.processes == run.processes]
        bare_rate = _mean_rate(bare)
        ratio = run.rate / bare_rate if bare_rate else 0.0
        rows.append(
            [
                STORE_NAMES[run.target] + (" (ids repeated!)" if run.wrapped else ""),
                str(run.processes),
                f"{run.rate:,.0f}",
                " / ".join(f"{b.rate:,.0f}" for b in bare),
                f"{ratio:.2f}",
                _verdict(ratio, INGEST_TARGETS.get(run.target)),
                f"{run.wrk.p50_ms:.1f} / {run.wrk.p99_ms:.1f}",
                " / ".join(f"{b.wrk.p50_ms:.1f} / {b.wrk.p99_ms:.1f}" for b in bare[:1]),
                f"{run.cpu_us_per_request:.0f} ({_mean_cpu(bare):.0f})",
                _mib(run.peak_rss_kib),
            ]
        )
    return (
        f"## Ingest: {settings['ingest']}\n\n"
        + _table(header, rows)
        + "\n\nbare aiohttp: measured before and after the stores at each process count"
        " (both shown, their mean is the ratio's denominator). One process: pinned to CPU 0,"
        " wrk to CPU 1. Two processes: `serve --workers 2` and wrk unpinned."
        " Handler only: our ingress whose inbox writer answers at once without the store or"
        " Redis (verify, parse, log line, metrics, answer): the most any inbox design could"
        " reach with logging and metrics on."
    )


def _mean_cpu(runs: Sequence[IngestRun]) -> float:
    return sum(run.cpu_us_per_request for run in runs) / len(runs) if runs else 0.0


def _reconcile(runs: list[ReconcileRun], settings: dict[str, str]) -> str:
    if not runs:
        return ""
    header = [
        "store",
        "worker procs",
        "applied ev/s",
        "arq no-op jobs/s",
        "ratio",
        "target (ratio)",
        "CPU us/ev (no-op)",
        "peak RSS MiB",
        "outcome",
    ]
    rows = []
    for run in (run for run in runs if run.target != "noop"):
        noop = [n for n in runs if n.target == "noop" and n.workers == run.workers]
        noop_rate = _mean_rate(noop)
        ratio = run.rate / noop_rate if noop_rate else 0.0
        noop_cpu = sum(n.cpu_us_per_event for n in noop) / len(noop) if noop else 0.0
        rows.append(
            [
                STORE_NAMES[run.target],
                str(run.workers),
                f"{run.rate:,.0f}" + (" (late start)" if run.late_start else ""),
                " / ".join(f"{n.rate:,.0f}" for n in noop),
                f"{ratio:.2f}",
                _verdict(ratio, RECONCILE_TARGETS.get(run.target)),
                f"{run.cpu_us_per_event:.0f} ({noop_cpu:.0f})",
                _mib(run.peak_rss_kib),
                ", ".join(f"{count} {status}" for status, count in sorted(run.counts.items())),
            ]
        )
    return f"## Reconcile: {settings['reconcile']}\n\n" + _table(header, rows)


def _e2e(runs: list[E2eRun], settings: dict[str, str]) -> str:
    if not runs:
        return ""
    header = [
        "store",
        "offered load",
        "offered ev/s (target)",
        "events",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "not applied in time",
        "target p99",
    ]
    rows = []
    for run in runs:
        p99 = run.percentile(0.99)
        met = p99 is not None and p99 < E2E_P99_TARGET_MS
        rows.append(
            [
                STORE_NAMES[run.target],
                run.load,
                f"{run.offered.rate:,.0f} ({run.target_rate:,.0f})",
                str(run.events),
                _ms(run.percentile(0.50)),
                _ms(run.percentile(0.95)),
                _ms(p99),
                _ms(run.percentile(1.0)),
                str(run.unfinished),
                f"{'met' if met else 'NOT met'} (< {E2E_P99_TARGET_MS:g} ms)",
            ]
        )
    return (
        f"## End to end: {settings['e2e']}\n\n"
        + _table(header, rows)
        + f"\n\n`>{DRAIN_TIMEOUT_S:g} s`: the percentile falls on an event still not applied"
        f" {DRAIN_TIMEOUT_S:g} s after the load stopped."
    )


def _memory(results: Results) -> str:
    peaks: dict[tuple[str, str], int] = {}
    for ingest in results.ingest:
        if ingest.target in INGEST_TARGETS:
            _keep_max(peaks, ("ingress", ingest.target), ingest.peak_rss_kib)
    for reconcile in results.reconcile:
        if reconcile.target != "noop":
            _keep_max(peaks, ("worker", reconcile.target), reconcile.peak_rss_kib)
    for e2e in results.e2e:
        for role, kib in e2e.peak_rss_kib.items():
            _keep_max(peaks, (role, e2e.target), kib)
    if not peaks:
        return ""
    rows = [
        [
            role,
            STORE_NAMES[store],
            _mib(kib),
            _verdict(kib / 1024, RSS_TARGET_MIB, at_least=False),
        ]
        for (role, store), kib in sorted(peaks.items())
    ]
    return "## Peak memory per process (VmHWM, highest over all runs above)\n\n" + _table(
        ["process", "store", "peak RSS MiB", "target MiB"], rows
    )


def _keep_max(peaks: dict[tuple[str, str], int], key: tuple[str, str], value: int) -> None:
    peaks[key] = max(peaks.get(key, 0), value)


def _mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


def _ms(value: float | None) -> str:
    return f">{DRAIN_TIMEOUT_S:g} s" if value is None else f"{value:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
