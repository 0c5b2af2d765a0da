"""Secrets and URLs with passwords print as `***`, whatever prints them."""

from __future__ import annotations

import pickle
import traceback

import pytest
import structlog

from service.secrets import MASK, Secret, SecretUrl, mask_url_password
from service.settings import Settings

CANARY = "whsec_canary_5f2c9a1e7b"
PASSWORD = "pw_canary_81d7e3"


def _settings() -> Settings:
    return Settings.from_env(
        {
            "WOOSHPAY_WEBHOOK_SECRETS": f"{CANARY},whsec_other_d41c",
            "DATABASE_URL": f"postgresql://app:{PASSWORD}@db.internal:5432/orders",
            "REDIS_URL": f"redis://:{PASSWORD}@redis.internal:6379/0",
        }
    )


def test_secret_prints_masked_everywhere() -> None:
    """repr, str, format and f-strings of a Secret all show the mask, never the value."""
    secret = Secret(CANARY)
    rendered = [repr(secret), str(secret), f"{secret}", f"{secret!r}", format(secret, ">40")]
    assert all(CANARY not in text for text in rendered)
    assert all(MASK in text for text in rendered)
    assert secret.reveal() == CANARY


def test_settings_repr_hides_every_secret() -> None:
    """A Settings object printed whole (as a traceback's locals would) shows no secret or
    password, but still shows the non-secret parts of its URLs."""
    text = f"{_settings()!r} {_settings()!s} {[_settings()]}"
    assert CANARY not in text
    assert PASSWORD not in text
    assert "db.internal:5432/orders" in text
    assert "redis.internal" in text


def test_secret_in_an_exception_message_and_traceback_is_masked() -> None:
    """An error message built from a secret, and its formatted traceback, stay masked."""
    settings = _settings()
    try:
        raise RuntimeError(f"cannot use {settings.webhook_secrets[0]} with {settings}")
    except RuntimeError:
        formatted = traceback.format_exc()
    assert CANARY not in formatted
    assert PASSWORD not in formatted


def test_secret_in_a_log_line_is_masked() -> None:
    """A careless log call that passes secrets as values shows only the mask."""
    settings = _settings()
    with structlog.testing.capture_logs() as lines:
        structlog.get_logger().info("careless", settings=settings, url=settings.database_url)
    rendered = repr(lines)
    assert CANARY not in rendered
    assert PASSWORD not in rendered


def test_equality_and_hashing_use_the_value() -> None:
    """Two secrets with the same value are equal and hash alike; a str is never equal."""
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert hash(Secret("a")) == hash(Secret("a"))
    assert Secret("a") != "a"


def test_secret_survives_pickling() -> None:
    """A Secret crossing a process boundary keeps its value and its mask."""
    copy = pickle.loads(pickle.dumps(Secret(CANARY)))  # noqa: S301 - our own bytes
    assert copy.reveal() == CANARY
    assert CANARY not in repr(copy)


def test_a_secret_must_be_a_string() -> None:
    """Wrapping something that is not a str is a programming error, caught at once."""
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw@db:5432/orders", "postgresql://app:***@db:5432/orders"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://user:pw@[::1]:6380/2", "rediss://user:***@[::1]:6380/2"),
        ("postgresql://app@db/orders", "postgresql://app@db/orders"),
        ("sqlite:///./orders.db", "sqlite:///./orders.db"),
        ("unix:///run/redis.sock", "unix:///run/redis.sock"),
        ("redis://:pw@host:notaport/0", MASK),
    ],
)
def test_url_password_is_masked_and_the_rest_kept(url: str, shown: str) -> None:
    """Only the password of a URL is masked; an unparseable URL is masked whole."""
    assert mask_url_password(url) == shown
    assert str(SecretUrl(url)) == shown
    assert SecretUrl(url).reveal() == url
