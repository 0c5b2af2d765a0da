"""A small HTTP server in each worker process: /metrics for Prometheus, /healthz for probes."""

from __future__ import annotations

from aiohttp import web

from service.metrics import CONTENT_TYPE_LATEST
from workers.metrics import WorkerMetrics

METRICS = web.AppKey("metrics", WorkerMetrics)


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def start_metrics_server(
    metrics: WorkerMetrics,
    *,
    port: int,
    host: str = "0.0.0.0",  # noqa: S104 - scraped in-cluster
) -> web.AppRunner:
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
