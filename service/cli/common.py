"""Helpers shared by the command-line modules: settings, logging, exit codes, async running, and
turning failures into one line for the operator.

Exit status: 0 success; 1 the operation was attempted and failed (an unknown order, the order
store or Redis unreachable, a database that does not exist, an order store without schema, an
unexpected error); 2 bad usage or configuration, found before anything was attempted.

A traceback is printed only with LOG_LEVEL=DEBUG, and then by the standard library's formatter,
which never shows local variables (they hold settings and customer data).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import traceback
from collections.abc import Coroutine
from typing import Any, NoReturn, Protocol, TypeVar

import click

from service.logs import configure_logging
from service.settings import Settings, SettingsError

T = TypeVar("T")

DEFAULT_PORT = 8080  # the webhook ingress, for `serve` and `dev`
EXIT_FAILED = 1  # the operation was attempted and failed, e.g. an unknown order
EXIT_USAGE = 2  # bad usage, including a missing or malformed setting

DEBUG_HINT = "rerun with LOG_LEVEL=DEBUG to see the traceback"


class CommandFailed(Exception):
    """A failure the operator can act on; its message says what went wrong and what to do."""

    code = EXIT_FAILED


class CommandLine(click.Group):
    """The top-level group: every command's failure ends in one line on stderr, never a
    traceback (unless LOG_LEVEL=DEBUG)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click reports these itself
        except CommandFailed as failure:
            fail(str(failure), code=failure.code, cause=failure)
        except Exception as error:
            hint = "" if _debugging() else f"; {DEBUG_HINT}"
            fail(f"unexpected {type_name(error)}{hint}", cause=error)


def load_settings(*, require_secrets: bool = False) -> Settings:
    """Settings from the environment, or a one-line error naming the variable and exit 2."""
    try:
        settings = Settings.from_env(require_secrets=require_secrets)
    except SettingsError as error:
        fail(f"configuration error: {error}", code=EXIT_USAGE)
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    return settings


def fail(message: str, *, code: int = EXIT_FAILED, cause: BaseException | None = None) -> NoReturn:
    """Print `error: message` (after the cause's traceback, with LOG_LEVEL=DEBUG) and exit."""
    if cause is not None and _debugging():
        traceback.print_exception(cause, file=sys.stderr)
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def print_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))


def plural(count: int, noun: str) -> str:
    """`1 event`, `2 events`, `0 events`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def type_name(error: BaseException) -> str:
    kind = type(error)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def _debugging() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


class Stoppable(Protocol):
    def stop(self, signum: signal.Signals = signal.SIGTERM) -> None: ...


def stop_on_signals(process: Stoppable) -> None:
    """SIGTERM and SIGINT stop `process` gracefully (running jobs finish or return to the queue)."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, process.stop, signum)
