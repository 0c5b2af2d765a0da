"""A small HTTP server in each worker process: /metrics for Prometheus, /healthz for liveness.

/healthz fails when the worker has not completed a poll cycle for STALE_AFTER_S: a stuck event
loop or a hung arq loop gets the process restarted, not just a worker that died.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from service.metrics import CONTENT_TYPE_LATEST
from service.timeouts import STALE_AFTER_S
from workers.metrics import WorkerMetrics

METRICS = web.AppKey("metrics", WorkerMetrics)


class MetricsPortUnavailable(Exception):
    """The metrics port cannot be bound: most often a second worker on the same host with the
    same default port. The message is one line that names the option to change."""

    def __init__(self, port: int, error: OSError) -> None:
        super().__init__(
            f"the worker's metrics port {port} is unavailable ({error.strerror or error}):"
            " another worker on this host may hold it; give each worker its own"
            " --metrics-port, or --metrics-port 0 to turn the endpoint off"
        )
        self.port = port


SILENCE: web.AppKey[Callable[[], float]] = web.AppKey("seconds_since_heartbeat")


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    silence_s = request.app[SILENCE]()
    alive = silence_s < STALE_AFTER_S
    return web.json_response(
        {"status": "ok" if alive else "stuck", "seconds_since_heartbeat": round(silence_s, 3)},
        status=200 if alive else 503,
    )


async def start_metrics_server(
    metrics: WorkerMetrics,
    seconds_since_heartbeat: Callable[[], float],
    *,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - scraped and probed from inside the cluster
) -> web.AppRunner:
    app = web.Application()
    app[METRICS] = metrics
    app[SILENCE] = seconds_since_heartbeat
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as error:
        await runner.cleanup()
        raise MetricsPortUnavailable(port, error) from None
    return runner
