"""The arq job: reconcile one recorded event, retrying transient failures and parking the rest.

arq retries only when a job raises `Retry`, and has no dead-letter queue; so the attempt count
and the `failed` state live in the inbox, and a failure that cannot even be written there is
left `pending` for the sweeper (it is never dropped).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import structlog
from arq import Retry
from sqlalchemy.ext.asyncio import AsyncEngine

from service.settings import Settings
from service.store.inbox import record_failure
from service.store.outages import STORE_OUTAGE_ERRORS
from workers.apply import ApplyResult, apply_event
from workers.errors import OrderNotFound, PermanentError, TransientError, describe
from workers.healing import heal_after_link, heal_if_found_now
from workers.metrics import WorkerMetrics
from workers.retries import (
    Counted,
    ErrorKind,
    FailureCount,
    NoLongerPending,
    StoreUnreachable,
    decide,
    parks,
)

log = structlog.get_logger("workers.reconcile")


@dataclass
class WorkerDeps:
    """What every job needs, opened once per worker process (see workers.main)."""

    settings: Settings
    engine: AsyncEngine
    metrics: WorkerMetrics


DEPS_KEY = "deps"


async def reconcile_event(ctx: dict[str, Any], event_id: str) -> str:
    """Apply one event; return the outcome (applied, stale, duplicate, ignored, ...)."""
    deps: WorkerDeps = ctx[DEPS_KEY]
    attempt = int(ctx.get("job_try") or 1)
    structlog.contextvars.bind_contextvars(event_id=event_id, attempt=attempt)
    started = time.perf_counter()
    try:
        result = await apply_event(deps.engine, event_id, now_ms=_now_ms())
    except PermanentError as error:
        return await _after_failure(ctx, event_id, error, ErrorKind.PERMANENT, attempt, started)
    except (TransientError, *STORE_OUTAGE_ERRORS) as error:
        # Expected, and logged as one `reconcile.retry` line: no traceback for a store outage.
        return await _after_failure(ctx, event_id, error, ErrorKind.TRANSIENT, attempt, started)
    except Exception as error:
        # Unexpected (a bug): log the traceback, then treat it like a transient failure, so the
        # event is retried and finally parked as `failed` (visible, replayable once fixed).
        log.exception("reconcile.error", error=type(error).__name__)
        return await _after_failure(ctx, event_id, error, ErrorKind.TRANSIENT, attempt, started)
    _finish(deps, result.outcome, started, result)
    if result.received_ms is not None:
        deps.metrics.processing_latency.observe(max(_now_ms() - result.received_ms, 0) / 1000)
    # After the commit: the events waiting for a link it made can find their order now.
    await heal_after_link(ctx, deps.engine, result)
    return result.outcome


async def _after_failure(
    ctx: dict[str, Any],
    event_id: str,
    error: BaseException,
    kind: ErrorKind,
    job_try: int,
    started: float,
) -> str:
    """Count the failure in the inbox, then act on the retry policy's verdict: raise arq's
    Retry, or end the job as `failed` or `duplicate`."""
    deps: WorkerDeps = ctx[DEPS_KEY]
    reason = describe(error)
    unmatched = error if isinstance(error, OrderNotFound) else None
    count = await _count_failure(deps, event_id, reason, kind, job_try, unmatched)
    if unmatched is not None and isinstance(count, Counted):
        # Its keys are committed now: look for the order once more (service.operations.heal).
        await heal_if_found_now(ctx, deps.engine, unmatched)
    settings = deps.settings
    verdict = decide(
        kind,
        reason,
        count,
        max_attempts=settings.retry_max_attempts,
        base_delay_s=settings.retry_base_delay_s,
    )
    _finish(deps, verdict.outcome, started, **verdict.log_fields())
    if verdict.defer_s is not None:
        raise Retry(defer=verdict.defer_s)
    return verdict.outcome


async def _count_failure(
    deps: WorkerDeps,
    event_id: str,
    reason: str,
    kind: ErrorKind,
    job_try: int,
    unmatched: OrderNotFound | None,
) -> FailureCount:
    try:
        attempts = await record_failure(
            deps.engine,
            event_id,
            error=reason,
            parks=functools.partial(parks, kind, max_attempts=deps.settings.retry_max_attempts),
            now_ms=_now_ms(),
            unmatched_keys=unmatched.keys if unmatched is not None else (),
        )
    except STORE_OUTAGE_ERRORS:
        return StoreUnreachable(job_try)
    return NoLongerPending() if attempts is None else Counted(attempts)


def _finish(
    deps: WorkerDeps,
    outcome: str,
    started: float,
    result: ApplyResult | None = None,
    /,
    **fields: object,
) -> None:
    """One log line per job, and the outcome and duration metrics."""
    duration = time.perf_counter() - started
    event_type = result.event_type if result is not None else None
    deps.metrics.outcomes.labels(event_type or "unknown", outcome).inc()
    deps.metrics.job_duration.observe(duration)
    if result is not None:
        fields.update(event_type=result.event_type, order_id=result.order_id)
        if result.status is not None:
            fields["order_status"] = result.status
    level = "warning" if outcome in ("retry", "failed", "missing") else "info"
    getattr(log, level)(
        f"reconcile.{outcome}", outcome=outcome, duration_ms=round(duration * 1000, 2), **fields
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
