"""The deployment's health checks and probes against a running ingress and worker.

The image's health-check script is run against real servers, and the Kubernetes probes and
scrape annotations are checked against the routes the running roles serve. The static checks of
the same files are in tests/static/test_deploy_manifests.py.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

from service.ingress.app import create_app
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.timeouts import STALE_AFTER_S
from tests.support import deploy_files as deploy
from workers.metrics import WorkerMetrics
from workers.metrics_server import start_metrics_server

HEALTHCHECK_SCRIPT = deploy.DEPLOY / "healthcheck.py"


async def _healthcheck(*ports: int) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HEALTHCHECK_SCRIPT), *map(str, ports)
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_healthcheck_passes_on_a_running_ingress(tmp_path: Path) -> None:
    """The image's health check succeeds against the ingress's /healthz."""
    settings = Settings(
        (Secret("whsec_probe"),), database_url=SecretUrl(f"sqlite:///{tmp_path / 'orders.db'}")
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        assert await _healthcheck(server.port) == 0
    finally:
        await server.close()


async def test_healthcheck_follows_the_worker_heartbeat() -> None:
    """The health check passes on a beating worker, fails on a stuck one and on a closed port."""
    silence = {"s": 0.0}
    runner = await start_metrics_server(
        WorkerMetrics(), lambda: silence["s"], port=0, host="127.0.0.1"
    )
    try:
        (address,) = runner.addresses
        port = int(address[1])
        assert await _healthcheck(port) == 0
        silence["s"] = STALE_AFTER_S + 1
        assert await _healthcheck(port) == 1
    finally:
        await runner.cleanup()
    assert await _healthcheck(port) == 1


def _ingress_get_paths() -> set[str]:
    app = create_app(Settings((Secret("whsec_routes"),)))
    return {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }


async def _worker_get_paths() -> set[str]:
    runner = await start_metrics_server(WorkerMetrics(), lambda: 0.0, port=0, host="127.0.0.1")
    try:
        return {
            route.resource.canonical
            for route in runner.app.router.routes()
            if route.method == "GET" and route.resource is not None
        }
    finally:
        await runner.cleanup()


async def test_k8s_probes_hit_existing_paths_on_the_listening_port() -> None:
    """Probes and scrape annotations name routes the role serves, on the port it listens on."""
    paths = {"serve": _ingress_get_paths(), "worker": await _worker_get_paths()}
    assert {"/healthz", "/readyz", "/metrics"} <= paths["serve"]
    assert {"/healthz", "/metrics"} <= paths["worker"]
    deployments = {doc["metadata"]["name"]: doc for doc in deploy.k8s_kind("Deployment")}
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        role = deploy.role(container["args"])
        port = deploy.listening_port(container["args"])
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        probes = [container[k] for k in ("livenessProbe", "readinessProbe") if k in container]
        assert "livenessProbe" in container, name
        for probe in probes:
            assert probe["httpGet"]["path"] in paths[role], name
            assert deploy.container_port(container, probe["httpGet"]["port"]) == port, name
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) == port, name
        assert annotations["prometheus.io/path"] in paths[role], name
    ingress = deployments["wooshpay-ingress"]["spec"]["template"]["spec"]["containers"][0]
    assert ingress["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert ingress["readinessProbe"]["httpGet"]["path"] == "/readyz"
