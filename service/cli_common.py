"""Helpers shared by the command-line modules: settings, logging, exit codes, async running."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import click

from service.logs import configure_logging
from service.settings import Settings, SettingsError

T = TypeVar("T")

EXIT_FAILED = 1  # a failed operation, e.g. an unknown order
EXIT_USAGE = 2  # bad usage, including a missing or malformed setting


def load_settings(*, require_secrets: bool = False) -> Settings:
    """Settings from the environment, or a one-line error naming the variable and exit 2."""
    try:
        settings = Settings.from_env(require_secrets=require_secrets)
    except SettingsError as error:
        fail(f"configuration error: {error}", code=EXIT_USAGE)
    configure_logging(log_format=settings.log_format, level=settings.log_level)
    return settings


def fail(message: str, *, code: int = EXIT_FAILED) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def print_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False))
