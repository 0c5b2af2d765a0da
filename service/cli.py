"""The `wooshpay-webhooks` command line (also `python -m service`)."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
from dataclasses import replace
from pathlib import Path

import click
import structlog
from aiohttp import web
from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli_common import EXIT_FAILED, EXIT_USAGE, CommandLine, fail, load_settings, run
from service.cli_ops import events, orders
from service.cli_send import send
from service.cli_store import StoreProblem, in_store, with_store
from service.dev_env import (
    DEV_ENV_NAME,
    SharedSettings,
    checkout_root,
    cli_invocation,
    dev_env_path,
    dev_env_text,
    export_line,
    published,
    shared_settings,
)
from service.http import WEBHOOK_PATH, create_app
from service.local_redis import RedisUnavailable, ensure_redis
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.store.migrate import current_revision, upgrade
from service.store.schema import events as events_table
from service.store.schema import orders as orders_table
from service.supervisor import Supervisor, serve_command
from workers.main import WorkerProcess
from workers.metrics_server import MetricsPortUnavailable, start_metrics_server

log = structlog.get_logger("service.cli")

DEFAULT_PORT = 8080
DEFAULT_WORKER_METRICS_PORT = 9101
# In-flight requests get this long to finish after SIGTERM before the ingress closes.
SHUTDOWN_TIMEOUT_S = 30.0
# Used by `dev` only when no secret is configured; printed so `send` can use it.
DEV_SECRET = "whsec_dev_local_only"  # noqa: S105 - a public development default


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
    _stop_on_signals(process)
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
    async with engine.connect() as connection:
        for table in (events_table, orders_table):
            await connection.execute(select(literal(1)).select_from(table).limit(1))


def _stop_on_signals(process: WorkerProcess) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, process.stop, signum)


@main.command()
def migrate() -> None:
    """Create or upgrade the order-store schema (safe to run twice)."""
    settings = load_settings()
    revision = in_store(settings.database_url, _migrate)
    click.echo(f"order store schema at revision {revision}")


async def _migrate(engine: AsyncEngine) -> str | None:
    await upgrade(engine)
    return await current_revision(engine)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
def dev(host: str, port: int) -> None:
    """Ingress and worker in one process on embedded defaults (SQLite, a local Redis)."""
    settings = load_settings()
    try:
        redis_url, _started = ensure_redis(settings.redis_url.reveal())
    except RedisUnavailable as error:
        fail(str(error), code=EXIT_FAILED)
    secrets = settings.webhook_secrets or (Secret(DEV_SECRET),)
    settings = replace(settings, redis_url=SecretUrl(redis_url), webhook_secrets=secrets)
    run(_dev(settings, host, port))


async def _dev(settings: Settings, host: str, port: int) -> None:
    await with_store(settings.database_url, upgrade)
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    process = WorkerProcess(settings)
    _stop_on_signals(process)
    cwd, root = Path.cwd(), checkout_root()
    shared = shared_settings(settings.redis_url, settings.database_url, cwd=cwd)
    try:
        # Other shells find this instance's Redis and order store through the file.
        with published(dev_env_path(root, cwd), dev_env_text(shared, os.getpid())) as written:
            _print_dev_instructions(
                settings,
                f"http://{host}:{port}{WEBHOOK_PATH}",
                shared,
                cli=cli_invocation(root, cwd),
                env_file_written=written,
            )
            await process.run()
    finally:
        await runner.cleanup()


def _print_dev_instructions(
    settings: Settings, url: str, shared: SharedSettings, *, cli: str, env_file_written: bool
) -> None:
    """What to type next, in another shell, exactly as it works there (a new shell included)."""
    secret = settings.webhook_secrets[0].reveal()  # the public dev default, or the user's own
    if env_file_written:
        where = f"{cli} reads them from {DEV_ENV_NAME} while dev runs; other tools: export them"
    else:
        where = "export them in the other shell first"
    exports = export_line(shared)
    click.echo(
        "\n".join(
            [
                f"wooshpay-webhooks dev: ingress on {url}, worker running,"
                f" order store {_store(settings)}",
                f"Settings in use ({where}):",
                *([f"  {exports}"] if exports else []),
                *(
                    f"  {name}: {masked} (carries a password, not shown: set it yourself)"
                    for name, masked in shared.masked.items()
                ),
                "In another shell, register an order, then send it a signed test event"
                " (Ctrl-C stops dev):",
                f"  {cli} orders add order_1 --amount 2000 --currency EUR",
                f"  {cli} send payment_intent.succeeded --order-id order_1 "
                f"--url {url} --secret {shlex.quote(secret)}",
                f"  {cli} orders show order_1",
            ]
        ),
        err=True,
    )


def _store(settings: Settings) -> str:
    return settings.database_url.reveal().split("://", 1)[0]


main.add_command(orders)
main.add_command(events)
main.add_command(send)
