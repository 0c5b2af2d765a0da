"""What the benchmark runs against: a private Redis, throw-away order stores, and processes whose
CPU time and peak memory are sampled from /proc while they run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg
import redis
from sqlalchemy.engine import make_url

from tests.support import databases
from tests.support.processes import cli_command, cli_env

SECRET: Final = "whsec_bench_only"
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S: Final = 20.0


@dataclass
class Proc:
    """A benchmarked process (and, for `serve --workers N`, its children), sampled from /proc."""

    name: str
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    peak_rss_kib: int = 0
    cpu_s: float = 0.0
    cpu_marks: dict[str, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def measured_pids(self) -> list[int]:
        """The pids doing the work: the children of a supervisor, else the process itself."""
        children = _children(self.pid)
        return children or [self.pid]

    def sample(self) -> None:
        """Update the peak RSS (VmHWM: the kernel's own high-water mark) and the CPU time used,
        while the process lives; after it exited the last sample stands."""
        pids = self.measured_pids()
        for pid in pids:
            self.peak_rss_kib = max(self.peak_rss_kib, _vm_hwm_kib(pid))
        self.cpu_s = max(self.cpu_s, sum(_cpu_seconds(pid) for pid in pids))

    def mark_cpu(self, label: str) -> None:
        self.sample()
        self.cpu_marks[label] = self.cpu_s

    def cpu_between(self, start: str, end: str) -> float:
        return self.cpu_marks.get(end, 0.0) - self.cpu_marks.get(start, 0.0)

    def stop(self) -> int:
        if self.running():
            self.sample()
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _children(pid: int) -> list[int]:
    try:
        text_ = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(part) for part in text_.split()]


def _vm_hwm_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def start(
    name: str, args: Sequence[str], *, env: dict[str, str], workdir: Path, cpu: str | None = None
) -> Proc:
    """Start a process, optionally pinned to CPUs (`taskset -c`), its output in files."""
    command = [*(["taskset", "-c", cpu] if cpu is not None else []), *args]
    stderr_path = workdir / f"{name}-{time.monotonic_ns()}.err"
    with stderr_path.open("wb") as stderr:
        popen = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
        )
    return Proc(name, popen, stderr_path)


def start_cli(
    name: str, args: Sequence[str], *, env: dict[str, str], workdir: Path, cpu: str | None = None
) -> Proc:
    return start(name, [*cli_command(), *args], env=env, workdir=workdir, cpu=cpu)


def service_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of our processes: production defaults (JSON logs at INFO, metrics on)."""
    return cli_env(
        WOOSHPAY_WEBHOOK_SECRETS=SECRET,
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        **extra,
    )


def wait_http(url: str, proc: Proc, *, timeout_s: float = 30.0) -> None:
    """Wait until `url` answers 200; fail with the process output if it dies or never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.running():
            raise RuntimeError(f"{proc.name} exited early:\n{proc.stderr_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} in {timeout_s} s")


def wait_log(proc: Proc, marker: str, *, count: int = 1, timeout_s: float = 30.0) -> None:
    """Wait until `marker` appears `count` times in the process output (e.g. each child of
    `serve --workers N` logging its start)."""
    deadline = time.monotonic() + timeout_s
    while proc.stderr_text().count(marker) < count:
        if not proc.running() or time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: no {count} x {marker}:\n{proc.stderr_text()[-3000:]}")
        time.sleep(0.1)


def flush_redis(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
    finally:
        client.close()


# --- order stores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Store:
    """An order store the benchmark may wipe: a SQLite file per run or a private PG database."""

    kind: str  # "sqlite" or "postgres"
    url: str


def fresh_sqlite(workdir: Path) -> Store:
    path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
    store = Store("sqlite", f"sqlite:///{path}")
    asyncio.run(databases.migrate(store.url))
    return store


def postgres_available() -> bool:
    return asyncio.run(databases.postgres_reachable(databases.postgres_admin_url()))


@contextmanager
def private_postgres() -> Iterator[Store]:
    """A database `bench_<random>` on the shared server, dropped afterwards whatever happens."""
    admin = databases.postgres_admin_url()
    name = f"bench_{uuid.uuid4().hex[:10]}"
    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_execute(admin, f'CREATE DATABASE "{name}"'))
    try:
        asyncio.run(databases.migrate(url))
        yield Store("postgres", url)
    finally:
        asyncio.run(_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _execute(url: str, statement: str) -> None:
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def reset(store: Store, workdir: Path) -> Store:
    """An empty store for the next measurement: a new SQLite file, or the PG tables truncated."""
    if store.kind == "sqlite":
        return fresh_sqlite(workdir)
    asyncio.run(_truncate(store.url))
    return store


async def _truncate(url: str) -> None:
    tables = ", ".join(databases.TABLES)
    await _execute(url, f"TRUNCATE {tables}")
    # Fresh statistics, so every run plans its queries on the same (empty) tables.
    await _execute(url, "VACUUM ANALYZE")
