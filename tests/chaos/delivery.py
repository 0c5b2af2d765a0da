"""WooshPay's side of the soak: every event delivered, signed afresh, until it is answered 2xx.

Deliveries are shuffled across all orders, a share of them is delivered twice (identical bodies, as
WooshPay redelivers): half of those later, half as "twins" posted at the same moment to both
ingresses (WooshPay resending while its first attempt still waits; the guarantees cover concurrent
delivery to several ingress processes). `concurrency` senders post them round-robin to the ports,
paced so the whole list spans the delivery window (the faults happen while traffic flows). A
delivery not answered 2xx (503, refused, reset, timeout) is retried with a short backoff, on the
next port in the rotation, as WooshPay would retry through a load balancer; it is given up (and
reported) only after `give_up_s`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from service.devtools.sender import encode_event
from service.wooshpay.signatures import sign_header

WEBHOOK_PATH: Final = "/webhooks/wooshpay"
SIGNATURE_HEADER: Final = "Wooshpay-Signature"
# Longer than the ingress's own 10 s bound on recording a batch.
REQUEST_TIMEOUT_S: Final = 15.0
RETRY_BASE_S: Final = 0.1
RETRY_MAX_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    body: bytes
    twin: bool = False  # also posted, at the same moment, to the next ingress

    @property
    def posts(self) -> int:
        return 2 if self.twin else 1


def plan_deliveries(
    events: Sequence[dict[str, Any]], rng: random.Random, *, duplicate_share: float
) -> list[Delivery]:
    """Every event once, `duplicate_share` of them twice (half of those as twins), shuffled."""
    unique = [Delivery(str(event["id"]), encode_event(event)) for event in events]
    repeated = rng.sample(range(len(unique)), round(len(unique) * duplicate_share))
    later = repeated[: len(repeated) // 2]
    for index in repeated[len(repeated) // 2 :]:
        unique[index] = Delivery(unique[index].event_id, unique[index].body, twin=True)
    deliveries = [*unique, *(unique[index] for index in later)]
    rng.shuffle(deliveries)
    return deliveries


@dataclass
class DeliveryStats:
    posts: int = 0  # HTTP attempts, retries included
    answers: Counter[str] = field(default_factory=Counter)  # outcome -> count
    accepted: set[str] = field(default_factory=set)  # event ids answered 2xx at least once
    duplicate_answers: int = 0  # 2xx answers saying `duplicate: true`
    wrong_answers: list[str] = field(default_factory=list)  # 2xx naming another event id
    undelivered: list[str] = field(default_factory=list)
    ok_at: dict[int, list[float]] = field(default_factory=dict)  # port -> monotonic 2xx times
    started: float = 0.0
    finished: float = 0.0

    def first_ok_after(self, moment: float, ports: Sequence[int]) -> float | None:
        """The first 2xx answer completed at or after `moment` on any of `ports`."""
        times = [t for port in ports for t in self.ok_at.get(port, []) if t >= moment]
        return min(times, default=None)


class Sender:
    def __init__(
        self,
        ports: Sequence[int],
        secret: str,
        *,
        concurrency: int,
        window_s: float,
        give_up_s: float,
        host: str = "127.0.0.1",
    ) -> None:
        self._urls = {port: f"http://{host}:{port}{WEBHOOK_PATH}" for port in ports}
        self._rotation = itertools.cycle(list(ports))
        self._secret = secret
        self._concurrency = concurrency
        self._window_s = window_s
        self._give_up_s = give_up_s
        self.stats = DeliveryStats()

    async def run(self, deliveries: Sequence[Delivery]) -> DeliveryStats:
        started = self.stats.started = time.monotonic()
        interval_s = self._window_s / max(len(deliveries), 1)
        queue = iter(enumerate(deliveries))
        connector = aiohttp.TCPConnector(limit=self._concurrency * 2)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def sender() -> None:
                for index, delivery in queue:
                    # Pacing: delivery i leaves at its slot in the window, not before.
                    await asyncio.sleep(max(0.0, started + index * interval_s - time.monotonic()))
                    copies = [next(self._rotation) for _ in range(delivery.posts)]
                    await asyncio.gather(*(self._deliver(session, delivery, p) for p in copies))

            # A TaskGroup: should one sender fail (a harness bug), the others are cancelled too.
            async with asyncio.TaskGroup() as senders:
                for _ in range(self._concurrency):
                    senders.create_task(sender())
        self.stats.finished = time.monotonic()
        return self.stats

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery, port: int) -> None:
        give_up = time.monotonic() + self._give_up_s
        for attempt in itertools.count():
            if attempt:
                port = next(self._rotation)
            if await self._post(session, port, delivery):
                return
            if time.monotonic() > give_up:
                self.stats.undelivered.append(delivery.event_id)
                return
            backoff_s = min(RETRY_MAX_S, RETRY_BASE_S * 2**attempt)
            await asyncio.sleep(backoff_s * random.uniform(0.5, 1.0))  # WooshPay's retry pacing

    async def _post(self, session: aiohttp.ClientSession, port: int, delivery: Delivery) -> bool:
        """One signed POST; True when answered 2xx."""
        headers = {
            "Content-Type": "application/json",
            # Signed at send time, like every WooshPay (re)delivery.
            SIGNATURE_HEADER: sign_header(delivery.body, self._secret, timestamp=int(time.time())),
        }
        self.stats.posts += 1
        try:
            async with session.post(self._urls[port], data=delivery.body, headers=headers) as resp:
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            self.stats.answers[_failure_kind(error)] += 1
            return False
        self.stats.answers[str(status)] += 1
        if not 200 <= status < 300:
            return False
        self._accepted(port, delivery, text)
        return True

    def _accepted(self, port: int, delivery: Delivery, text: str) -> None:
        self.stats.ok_at.setdefault(port, []).append(time.monotonic())
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("event_id") != delivery.event_id:
            self.stats.wrong_answers.append(delivery.event_id)
        elif answer.get("duplicate") is True:
            self.stats.duplicate_answers += 1
        self.stats.accepted.add(delivery.event_id)


def _failure_kind(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connection_refused"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "disconnected"
    return type(error).__name__
