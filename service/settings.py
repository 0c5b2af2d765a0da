"""The service's configuration: one frozen Settings built from the environment.

Nothing else reads os.environ. A missing or malformed value stops the program at start with a
one-line error naming the variable (SettingsError).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from service.secrets import Secret, SecretUrl

T = TypeVar("T")

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
DEFAULT_DATABASE_URL: Final = "sqlite:///./orders.db"
LOG_FORMATS: Final = ("json", "console")
_DEFAULT_REDIS: Final = SecretUrl(DEFAULT_REDIS_URL)
_DEFAULT_DATABASE: Final = SecretUrl(DEFAULT_DATABASE_URL)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, typed. Secrets and URLs (which may carry a password) are `Secret` values:
    they print as `***`, so neither a log line nor a traceback can show them."""

    webhook_secrets: tuple[Secret, ...]
    redis_url: SecretUrl = _DEFAULT_REDIS
    database_url: SecretUrl = _DEFAULT_DATABASE
    tolerance_s: int = 300
    retry_max_attempts: int = 8
    retry_base_delay_s: float = 2.0
    sweep_interval_s: float = 30.0
    log_format: str = "json"
    log_level: str = "INFO"
    max_body_bytes: int = 1024 * 1024

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, require_secrets: bool = True
    ) -> Settings:
        """Read every setting; `require_secrets` is False for commands that verify nothing."""
        env = os.environ if environ is None else environ
        return cls(
            webhook_secrets=_secrets(env, required=require_secrets),
            redis_url=_url(
                env, "REDIS_URL", DEFAULT_REDIS_URL, ("redis://", "rediss://", "unix://")
            ),
            database_url=_url(
                env, "DATABASE_URL", DEFAULT_DATABASE_URL, ("postgresql", "postgres://", "sqlite")
            ),
            tolerance_s=_number(env, "WEBHOOK_TOLERANCE_SECONDS", 300, int, minimum=1),
            retry_max_attempts=_number(env, "RETRY_MAX_ATTEMPTS", 8, int, minimum=1),
            retry_base_delay_s=_number(env, "RETRY_BASE_DELAY_SECONDS", 2.0, float, minimum=0),
            sweep_interval_s=_number(env, "SWEEP_INTERVAL_SECONDS", 30.0, float, minimum=0.1),
            log_format=_choice(env, "LOG_FORMAT", "json", LOG_FORMATS),
            log_level=_log_level(env),
            max_body_bytes=_number(env, "MAX_BODY_BYTES", 1024 * 1024, int, minimum=1024),
        )


def _secrets(env: Mapping[str, str], *, required: bool) -> tuple[Secret, ...]:
    raw = env.get("WOOSHPAY_WEBHOOK_SECRETS", "")
    secrets = tuple(Secret(part.strip()) for part in raw.split(",") if part.strip())
    if required and not secrets:
        raise SettingsError(
            "WOOSHPAY_WEBHOOK_SECRETS is required: comma-separated webhook endpoint secrets"
        )
    return secrets


def _url(env: Mapping[str, str], name: str, default: str, schemes: tuple[str, ...]) -> SecretUrl:
    value = env.get(name, "").strip() or default
    if not value.startswith(schemes):
        # Never echo the value: URLs carry passwords.
        raise SettingsError(f"{name} must start with one of: {', '.join(schemes)}")
    return SecretUrl(value)


def _number(
    env: Mapping[str, str], name: str, default: T, parse: Callable[[str], T], *, minimum: float
) -> T:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if not value >= minimum:  # type: ignore[operator]
        raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _log_level(env: Mapping[str, str]) -> str:
    value = env.get("LOG_LEVEL", "").strip().upper() or "INFO"
    if not isinstance(logging.getLevelName(value), int):
        raise SettingsError(f"LOG_LEVEL must be a standard level name, got {value!r}")
    return value
