"""The reconcile baseline: an arq worker with our worker's settings (poll delay, max_jobs, read
limit, serializer, hooks, JSON logs at INFO) whose job does nothing. Run as
`python -m tests.bench.noop_worker` with the service environment; it works the queue in burst
mode and prints `NOOP {"jobs": n, "last_end_ms": ..., "cpu_s": ...}` when the queue is empty."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from arq import func
from arq.worker import Worker

from service.cli.common import load_settings
from service.queue import RECONCILE_FUNCTION, create_redis
from service.timeouts import JOB_TIMEOUT_S
from workers.main import arq_max_tries, worker_options


async def noop(ctx: dict[str, Any], event_id: str) -> str:
    return event_id


class Progress:
    def __init__(self) -> None:
        self.jobs = 0
        self.first_cpu_s: float | None = None
        self.last_cpu_s = 0.0
        self.last_end_ms = 0

    async def job_started(self, _ctx: dict[str, Any]) -> None:
        if self.first_cpu_s is None:
            self.first_cpu_s = time.process_time()

    async def job_ended(self, _ctx: dict[str, Any]) -> None:
        self.jobs += 1
        self.last_end_ms = int(time.time() * 1000)
        self.last_cpu_s = time.process_time()


async def work(progress: Progress) -> None:
    settings = load_settings()
    options = worker_options(settings, burst=True)
    tries = arq_max_tries(settings)
    options["functions"] = [
        func(noop, name=RECONCILE_FUNCTION, max_tries=tries, timeout=JOB_TIMEOUT_S)
    ]
    # No order store to open; everything else is our worker's configuration.
    options["on_startup"] = options["on_shutdown"] = None
    bind_context = options["on_job_start"]

    async def on_job_start(ctx: dict[str, Any]) -> None:
        await progress.job_started(ctx)
        await bind_context(ctx)

    options["on_job_start"] = on_job_start
    options["after_job_end"] = progress.job_ended
    worker = Worker(
        **options, redis_pool=create_redis(settings.redis_url.reveal()), handle_signals=False
    )
    try:
        await worker.async_run()
    finally:
        await worker.close()


def main() -> None:
    progress = Progress()
    asyncio.run(work(progress))
    cpu_s = progress.last_cpu_s - (progress.first_cpu_s or 0.0)
    report = {"jobs": progress.jobs, "last_end_ms": progress.last_end_ms, "cpu_s": cpu_s}
    print(f"NOOP {json.dumps(report)}", flush=True)


if __name__ == "__main__":
    main()
