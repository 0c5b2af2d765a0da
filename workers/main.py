"""Worker processes: arq settings built from Settings, and a supervisor loop around arq.

Tuning (see docs/arq.md#polling): arq polls, and a new job waits half a poll interval on
average before it starts; arq's default interval (0.5 s) would put that wait into every event's
accepted -> applied latency. We poll every POLL_DELAY_S (service.timeouts), trading a few cheap
Redis calls a second per idle worker for that latency. We run up to MAX_JOBS jobs at once: fewer
leave the CPU idle during database round trips and spread each poll's cost over fewer jobs,
more add lock waits (the measured trade-off is in the README's performance section). We read
far enough ahead that other workers' running jobs cannot starve us, keep no results (our
results live in the order store), and refresh the health key every HEALTH_CHECK_INTERVAL_S so
`arq --check workers.main.WorkerSettings` notices a dead worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any, Final

import structlog
from arq import func
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker
from redis.exceptions import RedisError

from service.queue import (
    DEFAULT_QUEUE_NAME,
    RECONCILE_FUNCTION,
    create_redis,
    deserialize_job,
    serialize_job,
)
from service.settings import Settings
from service.store.engine import create_engine
from service.timeouts import (
    HEALTH_CHECK_INTERVAL_S,
    JOB_COMPLETION_WAIT_S,
    JOB_TIMEOUT_S,
    POLL_DELAY_S,
    REDIS_RETRY_DELAY_S,
)
from workers.metrics import WorkerMetrics
from workers.reconcile import DEPS_KEY, WorkerDeps, reconcile_event
from workers.sweeper import run_sweeper

log = structlog.get_logger("workers.main")

MAX_JOBS: Final = 20
# At least the total concurrency of every worker sharing the queue (docs/arq.md#queue-read-limit).
QUEUE_READ_LIMIT: Final = 500


def arq_max_tries(settings: Settings) -> int:
    """arq's own try limit sits above ours, so our inbox decides when an event is `failed`;
    crashes and SIGTERMs also count as arq tries."""
    return settings.retry_max_attempts + 10


def worker_options(
    settings: Settings, *, queue_name: str = DEFAULT_QUEUE_NAME, burst: bool = False
) -> dict[str, Any]:
    """Keyword arguments for arq's Worker (also the body of WorkerSettings)."""
    return {
        "functions": [
            func(
                reconcile_event,
                name=RECONCILE_FUNCTION,
                max_tries=arq_max_tries(settings),
                timeout=JOB_TIMEOUT_S,
            )
        ],
        "queue_name": queue_name,
        "burst": burst,
        "poll_delay": POLL_DELAY_S,
        "max_jobs": MAX_JOBS,
        "queue_read_limit": QUEUE_READ_LIMIT,
        "job_timeout": JOB_TIMEOUT_S,
        "keep_result": 0,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        "job_completion_wait": JOB_COMPLETION_WAIT_S,
        "job_serializer": serialize_job,
        "job_deserializer": deserialize_job,
        "on_startup": _open_deps_from_env,
        "on_shutdown": _close_own_deps,
        "on_job_start": _bind_job_context,
    }


def open_deps(settings: Settings, metrics: WorkerMetrics | None = None) -> WorkerDeps:
    return WorkerDeps(
        settings, create_engine(settings.database_url.reveal()), metrics or WorkerMetrics()
    )


async def _open_deps_from_env(ctx: dict[str, Any]) -> None:
    """For `arq workers.main.WorkerSettings`: deps come from the environment at start."""
    if DEPS_KEY not in ctx:
        ctx[DEPS_KEY] = open_deps(Settings.from_env(require_secrets=False))
        ctx["own_deps"] = True


async def _close_own_deps(ctx: dict[str, Any]) -> None:
    if ctx.pop("own_deps", False):
        await ctx[DEPS_KEY].engine.dispose()


async def _bind_job_context(ctx: dict[str, Any]) -> None:
    # Each job runs in its own task, so contextvars bound here tag only this job's log lines.
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(job_id=ctx.get("job_id"), attempt=ctx.get("job_try"))


def __getattr__(name: str) -> Any:
    # Built on first access, not at import: the arq CLI reads it after the environment is set.
    if name == "WorkerSettings":
        settings = Settings.from_env(require_secrets=False)
        body = worker_options(settings)
        body["redis_settings"] = RedisSettings.from_dsn(settings.redis_url.reveal())
        return type("WorkerSettings", (), body)
    raise AttributeError(name)


class _HeartbeatWorker(Worker):
    """arq's Worker, reporting each completed poll cycle: the liveness signal of the process."""

    def __init__(self, *args: Any, on_heartbeat: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_heartbeat = on_heartbeat

    async def heart_beat(self) -> None:
        await super().heart_beat()
        self._on_heartbeat()


class WorkerProcess:
    """Runs arq workers until told to stop, starting a fresh one whenever Redis is lost.

    arq's own loop ends on the first Redis error; a restart of Redis must not end the process.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        queue_name: str = DEFAULT_QUEUE_NAME,
        burst: bool = False,
        metrics: WorkerMetrics | None = None,
        redis_factory: Callable[[], ArqRedis] | None = None,
    ) -> None:
        self.settings = settings
        self.queue_name = queue_name
        self.burst = burst
        self.deps = open_deps(settings, metrics)
        self._redis_factory = redis_factory or (
            lambda: create_redis(settings.redis_url.reveal(), queue_name=queue_name)
        )
        self._stopping = asyncio.Event()
        self._worker: Worker | None = None
        self.jobs_complete = 0
        self.last_heartbeat = time.monotonic()

    def beat(self) -> None:
        """Record that the process is making progress (a poll cycle, or a reconnect attempt)."""
        self.last_heartbeat = time.monotonic()
        self.deps.metrics.last_heartbeat.set(time.time())

    def seconds_since_heartbeat(self) -> float:
        return time.monotonic() - self.last_heartbeat

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> None:
        """Stop taking jobs; running ones get JOB_COMPLETION_WAIT_S, then return to the queue."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.handle_sig_wait_for_completion(signum)

    async def run(self) -> None:
        sweeper_redis = None if self.burst else self._redis_factory()
        sweeper = self._start_sweeper(sweeper_redis)
        try:
            while not self._stopping.is_set():
                finished = await self._run_one_worker()
                if finished and self.burst:
                    break
                if not self._stopping.is_set():
                    # Waiting for Redis is the right thing to do, not a hang.
                    self.beat()
                    await self._pause(REDIS_RETRY_DELAY_S)
        finally:
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            if sweeper_redis is not None:
                with contextlib.suppress(RedisError, OSError):
                    await sweeper_redis.aclose()
            await self.deps.engine.dispose()

    def _start_sweeper(self, redis: ArqRedis | None) -> asyncio.Task[None] | None:
        if redis is None:
            return None
        return asyncio.create_task(
            run_sweeper(
                self.deps.engine,
                redis,
                interval_s=self.settings.sweep_interval_s,
                metrics=self.deps.metrics,
            )
        )

    async def _run_one_worker(self) -> bool:
        """Run one arq worker to its end; True when it ended normally (burst done or stop)."""
        redis = self._redis_factory()
        options = worker_options(self.settings, queue_name=self.queue_name, burst=self.burst)
        worker = _HeartbeatWorker(
            **options,
            redis_pool=redis,
            handle_signals=False,
            ctx={DEPS_KEY: self.deps},
            on_heartbeat=self.beat,
        )
        self._worker = worker
        try:
            await worker.async_run()
            return True
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
            return True
        except (RedisError, OSError) as error:
            log.warning("worker.redis_lost", error=type(error).__name__)
            return False
        finally:
            self._worker = None
            self.jobs_complete += worker.jobs_complete
            await _close_quietly(worker)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


async def _close_quietly(worker: Worker) -> None:
    # Closing talks to Redis (deletes the health key); when Redis is gone that must not hide
    # the real reason the worker ended.
    with contextlib.suppress(RedisError, OSError, asyncio.CancelledError):
        await worker.close()
