"""Unit tests for service.settings: defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import dataclasses

import pytest

from service.secrets import Secret, SecretUrl
from service.settings import Settings, SettingsError

PASSWORD = "hunter2-do-not-log"


def _load(env: dict[str, str], *, require_secrets: bool = False) -> Settings:
    return Settings.from_env(env, require_secrets=require_secrets)


def _error(env: dict[str, str], *, require_secrets: bool = False) -> str:
    with pytest.raises(SettingsError) as caught:
        _load(env, require_secrets=require_secrets)
    message = str(caught.value)
    assert "\n" not in message, "a settings error is one line"
    return message


def test_defaults_match_the_documented_table() -> None:
    """With an empty environment every setting takes its documented default."""
    settings = _load({})

    assert settings.webhook_secrets == ()
    assert settings.redis_url.reveal() == "redis://localhost:6379/0"
    assert settings.database_url.reveal() == "sqlite:///./orders.db"
    assert settings.tolerance_s == 300
    assert settings.retry_max_attempts == 8
    assert settings.retry_base_delay_s == 2.0
    assert settings.sweep_interval_s == 30.0
    assert settings.log_format == "json"
    assert settings.log_level == "INFO"
    assert settings.max_body_bytes == 1024 * 1024


def test_empty_values_mean_the_default() -> None:
    """A variable set to blanks is treated like an unset one, not as malformed."""
    blank = {
        name: "  "
        for name in (
            "REDIS_URL",
            "DATABASE_URL",
            "WEBHOOK_TOLERANCE_SECONDS",
            "RETRY_MAX_ATTEMPTS",
            "RETRY_BASE_DELAY_SECONDS",
            "SWEEP_INTERVAL_SECONDS",
            "LOG_FORMAT",
            "LOG_LEVEL",
        )
    }
    assert _load(blank) == _load({})


def test_every_variable_is_parsed() -> None:
    """Each documented variable lands, parsed and typed, in its Settings field."""
    settings = _load(
        {
            "WOOSHPAY_WEBHOOK_SECRETS": "whsec_new,whsec_old",
            "REDIS_URL": "rediss://:pw@redis.internal:6380/2",
            "DATABASE_URL": "postgresql://app:pw@db.internal:5432/orders",
            "WEBHOOK_TOLERANCE_SECONDS": " 120 ",
            "RETRY_MAX_ATTEMPTS": "3",
            "RETRY_BASE_DELAY_SECONDS": "0.25",
            "SWEEP_INTERVAL_SECONDS": "1.5",
            "LOG_FORMAT": "CONSOLE",
            "LOG_LEVEL": "debug",
            "MAX_BODY_BYTES": "65536",
        },
        require_secrets=True,
    )

    assert settings == Settings(
        webhook_secrets=(Secret("whsec_new"), Secret("whsec_old")),
        redis_url=SecretUrl("rediss://:pw@redis.internal:6380/2"),
        database_url=SecretUrl("postgresql://app:pw@db.internal:5432/orders"),
        tolerance_s=120,
        retry_max_attempts=3,
        retry_base_delay_s=0.25,
        sweep_interval_s=1.5,
        log_format="console",
        log_level="DEBUG",
        max_body_bytes=65536,
    )
    assert isinstance(settings.tolerance_s, int)
    assert isinstance(settings.retry_max_attempts, int)
    assert isinstance(settings.retry_base_delay_s, float)


def test_secrets_are_split_trimmed_and_empty_items_dropped() -> None:
    """Comma-separated secrets keep their order; spaces around them and empty items vanish."""
    settings = _load(
        {"WOOSHPAY_WEBHOOK_SECRETS": " whsec_a , whsec_b,, ,whsec_c ,"}, require_secrets=True
    )
    assert [secret.reveal() for secret in settings.webhook_secrets] == [
        "whsec_a",
        "whsec_b",
        "whsec_c",
    ]


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:pw@redis.example:6380/1",
        "unix:///run/redis/redis.sock",
    ],
)
def test_redis_url_schemes_accepted(url: str) -> None:
    """REDIS_URL accepts the redis, rediss and unix socket schemes."""
    assert _load({"REDIS_URL": url}).redis_url.reveal() == url


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://app@127.0.0.1:5432/orders",
        "postgresql+asyncpg://app@127.0.0.1/orders",
        "postgres://app@127.0.0.1/orders",
        "sqlite:///./orders.db",
        "sqlite:////var/lib/orders.db",
    ],
)
def test_database_url_schemes_accepted(url: str) -> None:
    """DATABASE_URL accepts PostgreSQL and SQLite SQLAlchemy URLs."""
    assert _load({"DATABASE_URL": url}).database_url.reveal() == url


def test_settings_read_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping, from_env reads the process environment."""
    monkeypatch.setenv("WOOSHPAY_WEBHOOK_SECRETS", "whsec_from_env")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "4")
    settings = Settings.from_env()
    assert settings.webhook_secrets == (Secret("whsec_from_env"),)
    assert settings.retry_max_attempts == 4


@pytest.mark.parametrize("raw", [None, "", "   ", " , ,, "])
def test_missing_secrets_rejected_when_required(raw: str | None) -> None:
    """When secrets are required, none (unset, blank, or only commas) names the variable."""
    env = {} if raw is None else {"WOOSHPAY_WEBHOOK_SECRETS": raw}
    assert "WOOSHPAY_WEBHOOK_SECRETS" in _error(env, require_secrets=True)


def test_secrets_optional_when_not_required() -> None:
    """Commands that verify nothing start without any secret."""
    assert _load({}, require_secrets=False).webhook_secrets == ()


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("REDIS_URL", f"http://user:{PASSWORD}@redis.example:6379/0"),
        ("REDIS_URL", f"localhost:6379?password={PASSWORD}"),
        ("DATABASE_URL", f"mysql://user:{PASSWORD}@db.example/orders"),
        ("DATABASE_URL", f"redis://user:{PASSWORD}@db.example/0"),
    ],
)
def test_wrong_url_scheme_names_variable_without_echoing_url(name: str, url: str) -> None:
    """A URL with the wrong scheme is refused by name; the URL (and its password) is not echoed."""
    message = _error({name: url})
    assert name in message
    assert PASSWORD not in message
    assert url not in message


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("WEBHOOK_TOLERANCE_SECONDS", "abc"),
        ("WEBHOOK_TOLERANCE_SECONDS", "0"),
        ("WEBHOOK_TOLERANCE_SECONDS", "-5"),
        ("WEBHOOK_TOLERANCE_SECONDS", "nan"),
        ("WEBHOOK_TOLERANCE_SECONDS", "1.5"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("RETRY_MAX_ATTEMPTS", "1.5"),
        ("RETRY_MAX_ATTEMPTS", "-1"),
        ("RETRY_BASE_DELAY_SECONDS", "x"),
        ("RETRY_BASE_DELAY_SECONDS", "-1"),
        ("RETRY_BASE_DELAY_SECONDS", "nan"),
        ("RETRY_BASE_DELAY_SECONDS", "inf"),
        ("SWEEP_INTERVAL_SECONDS", "0"),
        ("SWEEP_INTERVAL_SECONDS", "nan"),
        ("SWEEP_INTERVAL_SECONDS", "inf"),
        ("MAX_BODY_BYTES", "lots"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "LOUD"),
        ("LOG_LEVEL", "10"),
    ],
)
def test_malformed_value_names_the_variable(name: str, raw: str) -> None:
    """Each malformed value raises a one-line SettingsError naming its variable."""
    assert name in _error({name: raw})


def test_settings_error_is_a_value_error() -> None:
    """SettingsError is a ValueError, so generic callers can still catch it."""
    assert issubclass(SettingsError, ValueError)


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after construction."""
    settings = _load({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.redis_url = SecretUrl("redis://elsewhere:6379/0")  # type: ignore[misc]
    assert settings.redis_url.reveal() == "redis://localhost:6379/0"
