"""The system under test, all private to one run: a PostgreSQL database reached through the proxy,
a redis-server, two ingress processes and three worker processes, each logging to its own file.

The shared servers on the machine are never touched: the run creates `chaos_<random>` next to the
admin database and drops it at the end, and starts its own redis-server. Every child is killed on
the way out, whatever happened; the harness's own connections go straight to PostgreSQL, so they
keep working while the proxy is cut. The processes get the canary webhook secret and Redis
password (tests.support.leaks), and their log files are searched for them as they grow
(tests.support.leak_watch).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, free_port, start_local_redis
from service.store.engine import create_engine
from service.store.migrate import upgrade
from tests.chaos.proxy import ProxyProcess
from tests.support import databases, leak_watch
from tests.support.leaks import webhook_secret, with_redis_password
from tests.support.processes import cli_command, cli_env

SECRET: Final = webhook_secret("chaos")
LOOPBACK: Final = "127.0.0.1"
READY_TIMEOUT_S: Final = 60.0
KILL_WAIT_S: Final = 10.0
# The ingress lets in-flight requests finish for 30 s after SIGTERM (service.cli.main).
GRACEFUL_STOP_S: Final = 40.0
POLL_S: Final = 0.05
_PR_SET_PDEATHSIG: Final = 1


@dataclass(frozen=True, slots=True)
class SystemOptions:
    workdir: Path
    ingresses: int = 2
    workers: int = 3
    sweep_interval_s: float = 1.0
    retry_base_delay_s: float = 0.2
    retry_max_attempts: int = 30


@dataclass
class Child:
    """One service process; `generation` counts its restarts."""

    role: str
    index: int
    generation: int
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}.{self.generation}"

    def running(self) -> bool:
        return self.process.poll() is None


def _die_with_parent() -> Callable[[], None]:
    """preexec hook: the child gets SIGKILL if the harness dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*cli_command(), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The hook only makes async-signal-safe calls (prctl, getppid).
            preexec_fn=_die_with_parent(),
        )
    leak_watch.watch_file(log_path, process)
    return process


async def wait_exit(process: subprocess.Popen[bytes], deadline_s: float) -> bool:
    """Wait (polling, under a deadline) for a child to exit; True if it did."""
    give_up = time.monotonic() + deadline_s
    while process.poll() is None:
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(POLL_S)  # poll interval of a deadline-bounded wait
    return True


async def create_database(admin_url: str) -> str:
    name = f"chaos_{uuid.uuid4().hex[:12]}"
    dsn = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


@dataclass
class System:
    options: SystemOptions
    admin_url: str
    database_url: str = ""
    engine: AsyncEngine | None = None
    redis: LocalRedis | None = None
    proxy: ProxyProcess | None = None
    env: dict[str, str] = field(default_factory=dict)
    ingresses: list[Child] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)
    retired: list[Child] = field(default_factory=list)
    unclean_stops: list[str] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.options.workdir / "logs"

    @property
    def ingress_ports(self) -> list[int]:
        return [child.port for child in self.ingresses if child.port is not None]

    def require_engine(self) -> AsyncEngine:
        assert self.engine is not None, "system not started"
        return self.engine

    async def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.database_url = await create_database(self.admin_url)
        self.engine = create_engine(self.database_url)
        await upgrade(self.engine)
        self.redis = await asyncio.to_thread(start_local_redis)
        url = make_url(self.database_url)
        self.proxy = await ProxyProcess.start(url.host or LOOPBACK, url.port or 5432)
        proxied = url.set(host=LOOPBACK, port=self.proxy.port)
        self.env = cli_env(
            DATABASE_URL=proxied.render_as_string(hide_password=False),
            REDIS_URL=with_redis_password(self.redis.url),
            WOOSHPAY_WEBHOOK_SECRETS=SECRET,
            SWEEP_INTERVAL_SECONDS=str(self.options.sweep_interval_s),
            RETRY_BASE_DELAY_SECONDS=str(self.options.retry_base_delay_s),
            RETRY_MAX_ATTEMPTS=str(self.options.retry_max_attempts),
            LOG_LEVEL="WARNING",
            LOG_FORMAT="json",
        )
        self.ingresses = [
            self._start_ingress(i, 0, free_port()) for i in range(self.options.ingresses)
        ]
        self.workers = [self._start_worker(i, 0) for i in range(self.options.workers)]
        await asyncio.gather(*(self.wait_ready(child) for child in self.ingresses))

    def _log_path(self, role: str, index: int, generation: int) -> Path:
        return self.log_dir / f"{role}-{index}.{generation}.log"

    def _start_ingress(self, index: int, generation: int, port: int) -> Child:
        args = ["serve", "--host", LOOPBACK, "--port", str(port)]
        log_path = self._log_path("ingress", index, generation)
        return Child("ingress", index, generation, _spawn(args, self.env, log_path), log_path, port)

    def _start_worker(self, index: int, generation: int) -> Child:
        log_path = self._log_path("worker", index, generation)
        process = _spawn(["worker", "--metrics-port", "0"], self.env, log_path)
        return Child("worker", index, generation, process, log_path)

    async def wait_ready(self, child: Child) -> None:
        """Until the ingress answers /readyz with 200 (order store reachable), under a deadline."""
        url = f"http://{LOOPBACK}:{child.port}/readyz"
        give_up = time.monotonic() + READY_TIMEOUT_S
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < give_up:
                if not child.running():
                    raise RuntimeError(f"{child.name} exited; see {child.log_path}")
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(POLL_S)  # poll interval of a deadline-bounded wait
        raise RuntimeError(f"{child.name} not ready within {READY_TIMEOUT_S} s")

    # --- faults ---------------------------------------------------------------------------------

    async def kill_worker(self, index: int) -> None:
        """SIGKILL a worker (no goodbye: its running jobs stay 'in progress' in arq), start anew."""
        old = self.workers[index]
        old.process.kill()
        if not await wait_exit(old.process, KILL_WAIT_S):
            raise RuntimeError(f"{old.name} survived SIGKILL")
        self.retired.append(old)
        self.workers[index] = self._start_worker(index, old.generation + 1)

    async def stop_ingress(self, index: int) -> None:
        """SIGTERM an ingress and wait for its graceful exit."""
        old = self.ingresses[index]
        old.process.send_signal(signal.SIGTERM)
        if not await wait_exit(old.process, GRACEFUL_STOP_S):
            self.unclean_stops.append(f"{old.name}: no exit within {GRACEFUL_STOP_S} s of SIGTERM")
            old.process.kill()
            await wait_exit(old.process, KILL_WAIT_S)
        elif old.process.returncode != 0:
            self.unclean_stops.append(f"{old.name}: exit {old.process.returncode} after SIGTERM")
        self.retired.append(old)

    def start_ingress_again(self, index: int) -> Child:
        old = self.ingresses[index]
        assert old.port is not None
        self.ingresses[index] = self._start_ingress(index, old.generation + 1, old.port)
        return self.ingresses[index]

    async def restart_redis(self) -> None:
        assert self.redis is not None
        await asyncio.to_thread(self.redis.restart)

    async def cut_postgres(self) -> None:
        assert self.proxy is not None
        await self.proxy.cut()

    async def restore_postgres(self) -> None:
        assert self.proxy is not None
        await self.proxy.restore()

    # --- teardown -------------------------------------------------------------------------------

    def children(self) -> list[Child]:
        return [*self.ingresses, *self.workers, *self.retired]

    async def stop_services(self) -> None:
        """SIGTERM every running child, wait for all under a deadline, SIGKILL the stragglers."""
        running = [child for child in [*self.ingresses, *self.workers] if child.running()]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        exited = await asyncio.gather(
            *(wait_exit(child.process, GRACEFUL_STOP_S) for child in running)
        )
        for child, done in zip(running, exited, strict=True):
            if not done:
                self.unclean_stops.append(f"{child.name}: no exit within {GRACEFUL_STOP_S} s")
            elif child.process.returncode != 0:
                self.unclean_stops.append(
                    f"{child.name}: exit {child.process.returncode} after SIGTERM"
                )
        await self.kill_all()

    def crashed(self) -> list[str]:
        """Service processes that exited although nobody stopped them."""
        return [
            f"{child.name} exited {child.process.returncode}; see {child.log_path}"
            for child in [*self.ingresses, *self.workers]
            if not child.running()
        ]

    async def kill_all(self) -> None:
        for child in self.children():
            if child.running():
                child.process.kill()
        for child in self.children():
            await wait_exit(child.process, KILL_WAIT_S)

    async def close(self) -> None:
        """Release everything, each step regardless of the others."""
        try:
            await self.kill_all()
        finally:
            try:
                if self.proxy is not None:
                    await self.proxy.close()
            finally:
                await self._close_stores()

    async def _close_stores(self) -> None:
        try:
            if self.redis is not None:
                await asyncio.to_thread(self.redis.stop)
        finally:
            try:
                if self.engine is not None:
                    await self.engine.dispose()
            finally:
                if self.database_url:
                    await databases.drop_database(self.admin_url, self.database_url)
