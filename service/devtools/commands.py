"""The development commands: `dev` (ingress and worker in one process on embedded defaults) and
`send` (a signed test event). Registered by the command line only where this package exists."""

from __future__ import annotations

import os
import shlex
from dataclasses import replace
from pathlib import Path

import click
from aiohttp import web

from service.cli.common import (
    DEFAULT_PORT,
    EXIT_FAILED,
    fail,
    load_settings,
    run,
    stop_on_signals,
)
from service.cli.store_access import with_store
from service.devtools.dev_env import (
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
from service.devtools.local_redis import RedisUnavailable, ensure_redis
from service.devtools.send_command import send
from service.ingress.app import WEBHOOK_PATH, create_app
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.store.migrate import upgrade
from workers.main import WorkerProcess

__all__ = ["dev", "send"]

# Used by `dev` only when no secret is configured; printed so `send` can use it.
DEV_SECRET = "whsec_dev_local_only"  # noqa: S105 - a public development default


@click.command()
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
    stop_on_signals(process)
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
