"""Group commit for the ingress: concurrent requests share one inbox transaction and one Redis
round trip, so the cost of a commit and of a round trip is divided among the events of a batch.

Each event keeps the guarantees it would have if recorded alone: it is answered 200 only after
the transaction holding it committed; if that transaction fails, every request in the batch gets
StoreUnavailable (503) and WooshPay retries; a Redis failure only defers the enqueue (the inbox
row is `pending`, and the sweeper enqueues it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

import structlog
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.domain.event_status import EventStatus
from service.queue import QUEUE_ERRORS, enqueue_events
from service.store.inbox import NewEvent, first_new, record_new_events
from service.store.outages import is_store_outage
from service.timeouts import ENQUEUE_TIMEOUT_S, RECORD_TIMEOUT_S

log = structlog.get_logger("service.ingress.inbox_writer")

# The most requests one inbox statement records: it bounds the statement's size and parameter
# count; requests beyond it form the next batch.
MAX_BATCH: Final = 256

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The batch holding this event could not be committed."""


@dataclass(frozen=True, slots=True)
class Recorded:
    is_new: bool


@dataclass
class _Waiting:
    item: NewEvent
    future: asyncio.Future[Recorded]


class InboxWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: ArqRedis,
        *,
        concurrency: int = 1,
        clock: Callable[[], float] = time.time,
        on_deferred: Callable[[int], None] | None = None,
    ) -> None:
        self._engine = engine
        self._redis = redis
        self._clock = clock
        self._on_deferred = on_deferred or (lambda _count: None)
        # SQLite has one writer at a time, so one batch in flight; PostgreSQL takes a few.
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting: list[_Waiting] = []
        self._wakeup = asyncio.Event()
        self._flushes: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Flush what is waiting, then stop (called after in-flight requests finished)."""
        while self._waiting or self._flushes:
            self._wakeup.set()
            await asyncio.sleep(0.01)  # yield to the running flushes until they drain
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner

    async def record(self, item: NewEvent) -> Recorded:
        """Record one event (shared commit); raise StoreUnavailable when it cannot be recorded."""
        waiting = _Waiting(item, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._wakeup.set()
        return await waiting.future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                # Requests arriving while every slot is busy wait here and form the next batch.
                await self._slots.acquire()
                batch, self._waiting = next_batch(self._waiting)
                task = asyncio.get_running_loop().create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)

    async def _flush(self, batch: list[_Waiting]) -> None:
        try:
            new_ids = await self._commit(batch)
        except Exception as error:
            # Either way nothing was recorded: every request answers 503 and WooshPay retries.
            # A store outage is expected; anything else is a bug, logged with its traceback.
            report = log.warning if is_store_outage(error) else log.exception
            report("inbox.batch_failed", size=len(batch), error=type(error).__name__)
            for waiting in batch:
                _settle(waiting, exception=StoreUnavailable())
            return
        finally:
            self._slots.release()
        items = [w.item for w in batch]
        # A Redis failure only defers the enqueue (the sweeper takes over): the answer is the same.
        await self._enqueue(ids_to_enqueue(items, new_ids))
        for waiting, recorded in zip(batch, outcomes(items, new_ids), strict=True):
            _settle(waiting, recorded)

    async def _commit(self, batch: list[_Waiting]) -> set[str]:
        async with asyncio.timeout(RECORD_TIMEOUT_S):
            return await record_new_events(
                self._engine, [w.item for w in batch], now_ms=int(self._clock() * 1000)
            )

    async def _enqueue(self, to_enqueue: list[str]) -> None:
        """Enqueue a committed batch's jobs; when Redis fails, the sweeper will."""
        if not to_enqueue:
            return
        try:
            async with asyncio.timeout(ENQUEUE_TIMEOUT_S):
                await enqueue_events(self._redis, to_enqueue)
        except QUEUE_ERRORS as error:
            log.warning(
                "webhook.enqueue_deferred", count=len(to_enqueue), error=type(error).__name__
            )
            self._on_deferred(len(to_enqueue))


def next_batch(waiting: list[T], limit: int = MAX_BATCH) -> tuple[list[T], list[T]]:
    """The next batch, the `limit` oldest waiting requests in arrival order, and the rest."""
    return waiting[:limit], waiting[limit:]


def ids_to_enqueue(items: Sequence[NewEvent], new_ids: set[str]) -> list[str]:
    """The event ids of a committed batch that need a reconcile job: those whose row this batch
    created (`new_ids`, from record_new_events) and that are `pending` (an `ignored` event is
    finished on arrival), each once, in arrival order. An id already known was enqueued when
    it was first recorded, or is left to the sweeper."""
    return list(
        dict.fromkeys(
            item.event.event_id
            for item in items
            if item.event.event_id in new_ids and item.status == EventStatus.PENDING
        )
    )


def outcomes(items: Sequence[NewEvent], new_ids: set[str]) -> list[Recorded]:
    """Each request's answer once its batch committed: the first request of an id the batch
    created owns the new row; repeats in the batch and ids already known are duplicates."""
    return [Recorded(is_new=is_new) for is_new in first_new(items, new_ids)]


def _settle(
    waiting: _Waiting, result: Recorded | None = None, *, exception: Exception | None = None
) -> None:
    # A request whose client went away may have been cancelled; its future is then done.
    if waiting.future.done():
        return
    if exception is not None:
        waiting.future.set_exception(exception)
    else:
        waiting.future.set_result(result)  # type: ignore[arg-type]
