"""Faults on a schedule while the traffic flows, and how long the system took to get over each.

Kinds: `worker_kill` (SIGKILL a random worker, start a new one), `redis_restart` (all Redis data
lost), `postgres_cut` (the proxy refuses and drops every database connection for a while) and
`ingress_restart` (SIGTERM, graceful exit, start again on the same port). Each fault runs in its
own task at its planned moment, so faults may overlap, as they do in production.

Recovery is measured from the moment each fault was injected: until the affected ingress answered
2xx again after the repair (`answering_s`), and until no event received before the repair was
still `pending` (`drained_s`, polled straight from PostgreSQL; it includes whatever backlog the
traffic had built). For a worker kill also until every job in progress at the kill had been
processed (`in_flight_done_s`): the killed worker's jobs stay "in progress" in arq until their TTL
(job timeout 30 s + 10 s) runs out, so ~40 s there is the product's design.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.chaos.system import System

WORKER_KILL: Final = "worker_kill"
REDIS_RESTART: Final = "redis_restart"
POSTGRES_CUT: Final = "postgres_cut"
INGRESS_RESTART: Final = "ingress_restart"
KINDS: Final = (WORKER_KILL, REDIS_RESTART, POSTGRES_CUT, INGRESS_RESTART)
DRAIN_POLL_S: Final = 0.25
# arq marks every job a worker has picked with this key until the job ends (or its TTL runs out).
IN_PROGRESS_PREFIX: Final = "arq:in-progress:"


@dataclass(frozen=True, slots=True)
class FaultProfile:
    """When to hit what, as shares of the delivery window (seconds where named so)."""

    kill_every_s: float  # mean spacing of worker SIGKILLs (+-30 %)
    kills_from: float
    kills_until: float
    redis_restart_at: float
    postgres_cut_at: float
    postgres_cut_s: float
    ingress_restarts_at: tuple[float, ...]


# Workers are killed all along, so in-flight jobs also come back through arq's in-progress TTL.
SOAK_PROFILE: Final = FaultProfile(
    kill_every_s=5.0,
    kills_from=0.03,
    kills_until=0.9,
    redis_restart_at=0.30,
    postgres_cut_at=0.45,
    postgres_cut_s=10.0,
    ingress_restarts_at=(0.15, 0.72),
)
# Short: every kind at least once. The kills come before the Redis restart, which drops their
# jobs' "in progress" keys, so the sweeper (rather than arq's 40 s TTL) brings those jobs back
# and the run stays short.
CI_PROFILE: Final = FaultProfile(
    kill_every_s=2.5,
    kills_from=0.05,
    kills_until=0.27,
    redis_restart_at=0.30,
    postgres_cut_at=0.45,
    postgres_cut_s=6.0,
    ingress_restarts_at=(0.15,),
)


@dataclass
class Fault:
    kind: str
    target: str
    at_s: float  # planned offset into the delivery window
    duration_s: float = 0.0  # how long it is held (the PostgreSQL cut)
    started: float | None = None  # monotonic
    repaired: float | None = None  # monotonic
    repaired_wall_ms: int | None = None
    ports: tuple[int, ...] = ()  # ingress ports whose answers show the recovery
    answering_s: float | None = None
    ready_s: float | None = None  # an ingress restart: until its /readyz answered 200
    # A worker kill: the events whose jobs were in progress (on any worker) when it was killed,
    # and when the last of them was processed.
    in_flight: tuple[str, ...] = ()
    in_flight_done_s: float | None = None
    drained_s: float | None = None
    error: str | None = None


def plan_faults(
    window_s: float, profile: FaultProfile, rng: random.Random, *, workers: int, ingresses: int
) -> list[Fault]:
    faults = [
        Fault(REDIS_RESTART, "redis", profile.redis_restart_at * window_s),
        Fault(
            POSTGRES_CUT,
            "postgres",
            profile.postgres_cut_at * window_s,
            duration_s=profile.postgres_cut_s,
        ),
    ]
    for number, share in enumerate(profile.ingress_restarts_at):
        faults.append(Fault(INGRESS_RESTART, f"ingress-{number % ingresses}", share * window_s))
    at_s = profile.kills_from * window_s
    while at_s < profile.kills_until * window_s:
        faults.append(Fault(WORKER_KILL, f"worker-{rng.randrange(workers)}", at_s))
        at_s += profile.kill_every_s * rng.uniform(0.7, 1.3)
    return sorted(faults, key=lambda fault: fault.at_s)


async def in_progress_events(redis: Redis) -> tuple[str, ...]:
    """Event ids of the jobs arq has in progress (job ids are `evt:<event id>[:replay:...]`)."""
    try:
        # COUNT 1000: a backlog puts thousands of job keys in the keyspace to walk through.
        keys = [key async for key in redis.scan_iter(match=f"{IN_PROGRESS_PREFIX}*", count=1000)]
    except RedisError:
        return ()
    job_ids = (key.decode().removeprefix(IN_PROGRESS_PREFIX) for key in keys)
    return tuple(job_id.split(":")[1] for job_id in job_ids if job_id.startswith("evt:"))


@dataclass
class FaultInjector:
    system: System
    faults: Sequence[Fault]
    redis: Redis
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def run(self, started: float, delivering: asyncio.Event) -> None:
        """Inject each fault at its moment while delivery goes on; wait for every repair."""
        for fault in self.faults:
            await asyncio.sleep(max(0.0, started + fault.at_s - time.monotonic()))  # the schedule
            if not delivering.is_set():
                break
            self.tasks.append(asyncio.create_task(self._inject(fault)))
        await asyncio.gather(*self.tasks)

    async def _inject(self, fault: Fault) -> None:
        fault.started = time.monotonic()
        try:
            await self._break_and_repair(fault)
        except Exception as error:  # a harness failure: reported, and the run fails
            fault.error = f"{type(error).__name__}: {error}"
        finally:
            if fault.repaired is None:
                _mark_repaired(fault)

    async def _break_and_repair(self, fault: Fault) -> None:
        index = int(fault.target.rsplit("-", 1)[-1]) if "-" in fault.target else 0
        fault.ports = tuple(self.system.ingress_ports)
        if fault.kind == WORKER_KILL:
            fault.in_flight = await in_progress_events(self.redis)
            fault.started = time.monotonic()  # the kill itself, not the look at Redis
            await self.system.kill_worker(index)
        elif fault.kind == REDIS_RESTART:
            await self.system.restart_redis()
        elif fault.kind == POSTGRES_CUT:
            await self.system.cut_postgres()
            try:
                await asyncio.sleep(fault.duration_s)  # the outage's length
            finally:
                await self.system.restore_postgres()
        elif fault.kind == INGRESS_RESTART:
            fault.ports = (self.system.ingresses[index].port or 0,)
            await self.system.stop_ingress(index)
            restarted = self.system.start_ingress_again(index)
            _mark_repaired(fault)
            await self.system.wait_ready(restarted)
            # When no delivery reached it any more, readiness is its first 2xx.
            fault.ready_s = time.monotonic() - (fault.started or 0.0)


def _mark_repaired(fault: Fault) -> None:
    fault.repaired = time.monotonic()
    fault.repaired_wall_ms = int(time.time() * 1000)


def injected(faults: Sequence[Fault]) -> list[Fault]:
    return [fault for fault in faults if fault.started is not None]


async def pending_received_before(engine: AsyncEngine, received_ms: int) -> int:
    query = text("SELECT count(*) FROM events WHERE status = 'pending' AND received_ms <= :before")
    async with engine.connect() as connection:
        return int((await connection.execute(query, {"before": received_ms})).scalar_one())


async def pending_among(engine: AsyncEngine, event_ids: Sequence[str]) -> int:
    query = text(
        "SELECT count(*) FROM events WHERE status = 'pending' AND event_id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    async with engine.connect() as connection:
        return int((await connection.execute(query, {"ids": list(event_ids)})).scalar_one())


async def pending_count(engine: AsyncEngine) -> int:
    query = text("SELECT count(*) FROM events WHERE status = 'pending'")
    async with engine.connect() as connection:
        return int((await connection.execute(query)).scalar_one())


@dataclass
class DrainTracker:
    """Polls PostgreSQL directly: when each fault's backlog drained, and the largest backlog."""

    engine: AsyncEngine
    faults: Sequence[Fault]
    max_pending: int = 0
    last_pending: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll()
            try:
                async with asyncio.timeout(DRAIN_POLL_S):
                    await stop.wait()
            except TimeoutError:
                pass

    async def poll(self) -> None:
        self.last_pending = await pending_count(self.engine)
        self.max_pending = max(self.max_pending, self.last_pending)
        for fault in injected(self.faults):
            if fault.repaired_wall_ms is None or fault.started is None:
                continue
            since_s = time.monotonic() - fault.started
            if fault.drained_s is None and not await pending_received_before(
                self.engine, fault.repaired_wall_ms
            ):
                fault.drained_s = since_s
            if (
                fault.in_flight
                and fault.in_flight_done_s is None
                and not await pending_among(self.engine, fault.in_flight)
            ):
                fault.in_flight_done_s = since_s
