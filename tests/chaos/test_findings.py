"""Product defects the chaos work turned up, each pinned by a deterministic reproduction.

Fixed ones stay as regression tests. Open ones are strict xfails: they pass while the defect is
there and fail (XPASS) once it is fixed, the moment to delete the marker; the reason says what
goes wrong and how to fix it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis
from service.devtools.sender import EventOptions, build_event, encode_event
from service.domain.event_status import EventStatus
from service.queue import create_redis, enqueue_event, job_id_for
from service.store.engine import create_engine
from service.store.inbox import NewEvent, record_new_events
from service.wooshpay.events import parse_envelope
from tests.support.tcp_proxy import CHUNK_BYTES, TcpProxy
from workers.sweeper import BATCH_LIMIT, sweep_once

pytestmark = pytest.mark.postgres

GROUP_COMMIT_BATCH = 256  # service.ingress.inbox_writer.MAX_BATCH


def _refund_events(count: int, *, tag: str) -> list[NewEvent]:
    """Refund updates whose PaymentIntent no order knows yet (they wait in order_not_found)."""
    items = []
    for number in range(count):
        options = EventOptions(payment_intent=f"pi_{tag}_{number:05d}", refund_status="pending")
        event_document = build_event(
            "charge.refund.updated", options, now_ms=int(time.time() * 1000)
        )
        body = encode_event(event_document)
        items.append(NewEvent(parse_envelope(body), body, EventStatus.PENDING))
    return items


async def _record(engine: AsyncEngine, items: Sequence[NewEvent], *, received_ms: int) -> None:
    for start in range(0, len(items), GROUP_COMMIT_BATCH):
        await record_new_events(
            engine, items[start : start + GROUP_COMMIT_BATCH], now_ms=received_ms
        )


async def test_concurrent_group_commits_of_the_same_new_events_do_not_deadlock(
    private_store: AsyncEngine,
) -> None:
    """Two ingress batches holding the same new events in opposite orders both commit.

    Regression: rows inserted in arrival order made such batches deadlock in PostgreSQL (each
    INSERT ... ON CONFLICT DO NOTHING waits on the other's uncommitted row); the loser failed
    after deadlock_timeout and all its events (up to 256) were answered 503.
    """
    other = create_engine(private_store.url.render_as_string(hide_password=False))
    try:
        items = _refund_events(GROUP_COMMIT_BATCH, tag="twin")
        now_ms = int(time.time() * 1000)
        results = await asyncio.gather(
            record_new_events(private_store, items, now_ms=now_ms),
            record_new_events(other, items[::-1], now_ms=now_ms),
            return_exceptions=True,
        )
    finally:
        await other.dispose()
    errors = [repr(result) for result in results if isinstance(result, BaseException)]
    assert errors == []
    new_ids = Counter(i for result in results if isinstance(result, set) for i in result)
    assert sorted(new_ids.values()) == [1] * GROUP_COMMIT_BATCH  # each event new exactly once


class _CountingProxy(TcpProxy):
    """Counts the chunks it forwards, both ways: each round trip to PostgreSQL is at least two."""

    chunks = 0

    async def _pump(  # type: ignore[override]
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK_BYTES):
                self.chunks += 1
                writer.write(data)
                await writer.drain()


async def test_a_group_commit_takes_a_handful_of_round_trips(private_store: AsyncEngine) -> None:
    """A batch of 256 events reaches PostgreSQL in a few round trips, not one per event.

    Regression: `.returning(..., sort_by_parameter_order=True)` made SQLAlchemy fall back from
    insertmanyvalues to one INSERT per row, 256 round trips per group commit.
    """
    url = make_url(private_store.url.render_as_string(hide_password=False))
    proxy = _CountingProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    engine = create_engine(proxy.url_for(url.render_as_string(hide_password=False)))
    try:
        # The first batch connects and prepares; the second is the steady state.
        await record_new_events(engine, _refund_events(1, tag="warm"), now_ms=1)
        proxy.chunks = 0
        new_ids = await record_new_events(
            engine, _refund_events(GROUP_COMMIT_BATCH, tag="batch"), now_ms=1
        )
    finally:
        await engine.dispose()
        await proxy.close()
    assert len(new_ids) == GROUP_COMMIT_BATCH
    assert proxy.chunks < 40, f"{proxy.chunks} chunks for one batch of {GROUP_COMMIT_BATCH}"


async def test_the_sweeper_reaches_pending_events_behind_a_thousand_waiting_retries(
    private_store: AsyncEngine, private_redis: LocalRedis
) -> None:
    """Events whose jobs Redis lost are enqueued again even behind 1000 events in backoff."""
    now_ms = int(time.time() * 1000)
    waiting = _refund_events(BATCH_LIMIT, tag="waiting")
    stranded = _refund_events(3, tag="stranded")
    await _record(private_store, waiting, received_ms=now_ms - 60_000)
    await _record(private_store, stranded, received_ms=now_ms - 30_000)
    redis = create_redis(private_redis.url)
    try:
        # What arq holds for events in order_not_found backoff: a job deferred by minutes.
        for item in waiting:
            assert await enqueue_event(redis, item.event.event_id, defer_s=300)
        # The stranded events have no job: it was lost with Redis.
        await sweep_once(private_store, redis)
        keys = [f"arq:job:{job_id_for(item.event.event_id)}" for item in stranded]
        assert await redis.exists(*keys) == len(stranded)
    finally:
        await redis.aclose(close_connection_pool=True)
