"""The service's processes print no secret and no customer data, even when a job or a request
fails unexpectedly.

`wooshpay-webhooks worker` and `serve` run as real processes, in both log formats, configured
with the canary webhook secret and the canary database and Redis passwords (tests.support.leaks),
on events naming the canary customer. A fault forced from the database (tests.security
.store_faults) sends them down their error paths, where a traceback passes through frames whose
locals hold the settings and the event; nothing they print may contain a canary.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
import pytest

from service.devtools.local_redis import free_port
from service.queue import DEFAULT_QUEUE_NAME
from tests.conftest import SECRET
from tests.security.conftest import PrivateStore
from tests.security.store_faults import (
    INGRESS_INSERT_REFUSED,
    METRICS_RECEIVED_AS_TEXT,
    WORKER_BODY_AS_TEXT,
    WORKER_MARK_REFUSED,
    StoreFault,
    event_outcome,
)
from tests.support import flows
from tests.support.leaks import assert_no_leaks, redact
from tests.support.processes import CliProcess, cli_env, run_cli, start_cli, wait_for_http
from tests.support.webhooks import WEBHOOK_PATH, arq_pool, delivery, event_dict

HOST: Final = "127.0.0.1"
LOG_FORMATS: Final = ("json", "console")
ATTEMPTS: Final = 2
WORKER_TIMEOUT_S: Final = 60.0
REQUEST_TIMEOUT_S: Final = 15.0

pytestmark = pytest.mark.postgres


def service_env(store: PrivateStore, redis_url: str, log_format: str) -> dict[str, str]:
    """What the processes run with: every canary a deployment's environment could hold (the
    worker gets the webhook secrets too, as it does where one environment serves every role)."""
    return cli_env(
        WOOSHPAY_WEBHOOK_SECRETS=SECRET,
        DATABASE_URL=store.url,
        REDIS_URL=redis_url,
        RETRY_MAX_ATTEMPTS=str(ATTEMPTS),
        RETRY_BASE_DELAY_SECONDS="0.05",
        LOG_FORMAT=log_format,
        LOG_LEVEL="INFO",
    )


def new_order_id() -> str:
    return f"order-{uuid.uuid4().hex[:12]}"


async def recorded_event(store: PrivateStore) -> str:
    """A registered order and one recorded `pending` event for it (naming the customer)."""
    order_id = new_order_id()
    await flows.register_order(store.engine, order_id)
    item = flows.event(flows.new_clock(), "payment_intent.succeeded", order_id)
    await flows.record(store.engine, [item])
    return str(item["id"])


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize(
    "fault", [WORKER_BODY_AS_TEXT, WORKER_MARK_REFUSED], ids=lambda fault: fault.name
)
async def test_failing_worker_job_prints_no_canary(
    fault: StoreFault, log_format: str, private_store: PrivateStore, private_redis_url: str
) -> None:
    """A worker whose job fails unexpectedly on every attempt parks the event as `failed` and
    prints no secret, password or customer data, in either log format."""
    event_id = await recorded_event(private_store)
    await fault.install(private_store.engine)
    async with arq_pool(private_redis_url, DEFAULT_QUEUE_NAME) as pool:
        await flows.enqueue(pool, [event_id])
        result = await asyncio.to_thread(
            run_cli,
            ["worker", "--burst", "--metrics-port", "0"],
            env=service_env(private_store, private_redis_url, log_format),
            timeout_s=WORKER_TIMEOUT_S,
        )
    output = result.stdout + result.stderr

    assert_no_leaks(output, f"`worker` output ({log_format} logs)")
    assert result.returncode == 0, redact(output)
    assert fault.evidence in output, redact(output)
    assert await event_outcome(private_store.engine, event_id) == ("failed", ATTEMPTS)


async def deliver(url: str) -> int:
    """POST one signed event naming the customer; the HTTP status."""
    sent = delivery(event_dict("payment_intent.succeeded", order_id=new_order_id()))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url + WEBHOOK_PATH, data=sent.body, headers=sent.headers) as response,
    ):
        return response.status


async def scrape_metrics(url: str) -> int:
    """GET /metrics; the HTTP status."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(url + "/metrics") as response,
    ):
        return response.status


def start_ingress(env: dict[str, str], workdir: Path) -> tuple[CliProcess, str]:
    port = free_port()
    server = start_cli(["serve", "--host", HOST, "--port", str(port)], env=env, workdir=workdir)
    try:
        wait_for_http(HOST, port, "/healthz", process=server)
    except BaseException:
        server.kill()
        raise
    return server, f"http://{HOST}:{port}"


@dataclass(frozen=True, slots=True)
class IngressCase:
    fault: StoreFault
    request: Callable[[str], Awaitable[int]]
    statuses: range  # the answers the contract allows


INGRESS_CASES: Final = (
    # 503 when the order store cannot record the event (WooshPay retries).
    IngressCase(INGRESS_INSERT_REFUSED, deliver, range(503, 504)),
    # A scrape still answers when the store fails it; the failure is logged.
    IngressCase(METRICS_RECEIVED_AS_TEXT, scrape_metrics, range(200, 201)),
)


@pytest.mark.parametrize("log_format", LOG_FORMATS)
@pytest.mark.parametrize("case", INGRESS_CASES, ids=lambda case: case.fault.name)
async def test_failing_ingress_request_prints_no_canary(
    case: IngressCase,
    log_format: str,
    private_store: PrivateStore,
    private_redis_url: str,
    tmp_path: Path,
) -> None:
    """An ingress whose request fails unexpectedly (recording a delivery, or /metrics) answers
    with an error status and prints no secret, password or customer data, in either log
    format."""
    await recorded_event(private_store)  # so that /metrics has a pending event to age
    await case.fault.install(private_store.engine)
    env = service_env(private_store, private_redis_url, log_format)
    server, url = start_ingress(env, tmp_path)
    try:
        status = await case.request(url)
    finally:
        stopped = await asyncio.to_thread(server.stop)
    output = stopped.stdout + stopped.stderr

    assert_no_leaks(output, f"`serve` output ({log_format} logs)")
    assert case.fault.evidence in output, redact(output)
    assert status in case.statuses
