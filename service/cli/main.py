"""The `wooshpay-webhooks` command line (also `python -m service`)."""

from __future__ import annotations

import click
import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli.common import (
    DEFAULT_PORT,
    EXIT_USAGE,
    CommandLine,
    fail,
    load_settings,
    run,
    stop_on_signals,
)
from service.cli.ops import events, orders
from service.cli.store_access import StoreProblem, in_store
from service.cli.supervisor import Supervisor, serve_command
from service.ingress.app import create_app
from service.settings import Settings
from service.store.engine import reading
from service.store.inbox import probe_inbox_table
from service.store.migrate import current_revision, upgrade
from service.store.orders import probe_orders_table
from service.timeouts import SHUTDOWN_TIMEOUT_S
from workers.main import WorkerProcess
from workers.metrics_server import MetricsPortUnavailable, start_metrics_server

log = structlog.get_logger("service.cli.main")

DEFAULT_WORKER_METRICS_PORT = 9101


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wooshpay-webhooks")
def main() -> None:
    """Receive WooshPay webhooks and keep the merchant's order store true."""


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True)  # noqa: S104 - a container's ingress
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Ingress processes sharing the port (use one per core).",
)
@click.option("--reuse-port", is_flag=True, help="Share the port with other processes.")
def serve(host: str, port: int, workers: int, reuse_port: bool) -> None:
    """Run the HTTP ingress."""
    settings = load_settings(require_secrets=True)
    if workers > 1:
        raise SystemExit(Supervisor(serve_command(host, port), workers).run())
    log.info("ingress.starting", host=host, port=port)
    web.run_app(
        create_app(settings),
        host=host,
        port=port,
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=None,
        reuse_port=reuse_port or None,
    )


@main.command()
@click.option("--burst", is_flag=True, help="Stop once the queue is empty.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_WORKER_METRICS_PORT,
    show_default=True,
    help="Port for /metrics and /healthz; 0 turns it off.",
)
def worker(burst: bool, metrics_port: int) -> None:
    """Run an arq worker process that reconciles events into the order store."""
    settings = load_settings()
    _require_usable_store(settings)
    try:
        run(_worker(settings, burst=burst, metrics_port=metrics_port))
    except MetricsPortUnavailable as error:
        fail(str(error), code=EXIT_USAGE)


async def _worker(settings: Settings, *, burst: bool, metrics_port: int) -> None:
    process = WorkerProcess(settings, burst=burst)
    try:
        metrics_runner = (
            await start_metrics_server(
                process.deps.metrics, process.seconds_since_heartbeat, port=metrics_port
            )
            if metrics_port
            else None
        )
    except MetricsPortUnavailable:
        await process.deps.engine.dispose()
        raise
    stop_on_signals(process)
    try:
        await process.run()
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()


def _require_usable_store(settings: Settings) -> None:
    """Refuse to start on an order store no worker can use (no such database, no schema). An
    outage is only logged: the worker waits it out, as it does while running."""
    try:
        in_store(settings.database_url, _require_schema)
    except StoreProblem as problem:
        if not problem.outage:
            raise
        log.warning("worker.store_unavailable", reason=problem.reason)


async def _require_schema(engine: AsyncEngine) -> None:
    # Reading the tables the worker uses: a store never migrated fails here ("no such table").
    async with reading(engine).connect() as connection:
        for probe in (probe_inbox_table, probe_orders_table):
            await probe(connection)


@main.command()
def migrate() -> None:
    """Create or upgrade the order-store schema (safe to run twice)."""
    settings = load_settings()
    revision = in_store(settings.database_url, _migrate)
    click.echo(f"order store schema at revision {revision}")


async def _migrate(engine: AsyncEngine) -> str | None:
    await upgrade(engine)
    return await current_revision(engine)


main.add_command(orders)
main.add_command(events)


def _add_development_commands() -> None:
    """`dev` and `send` live in service.devtools, which a checkout has and a production install
    (the wheel, the container image) leaves out: there the command line offers neither."""
    try:
        from service.devtools.commands import dev, send
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("service.devtools"):
            raise
        return
    main.add_command(dev)
    main.add_command(send)


_add_development_commands()
