"""What `dev` shares with other shells: absolute store paths, masked passwords, `.dev-env`."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from service.devtools.dev_env import (
    SharedSettings,
    absolute_sqlite_url,
    cli_invocation,
    dev_env_path,
    dev_env_text,
    export_line,
    published,
    shared_settings,
)
from service.secrets import SecretUrl

PASSWORD = "hunter2-never-shown"
PRIVATE_REDIS = "redis://127.0.0.1:40123/0"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///./orders.db", "sqlite:////work/app/orders.db"),
        ("sqlite:///data/orders.db?timeout=3", "sqlite:////work/app/data/orders.db?timeout=3"),
        ("sqlite:////var/lib/orders.db", "sqlite:////var/lib/orders.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql://app@db:5432/orders", "postgresql://app@db:5432/orders"),
    ],
)
def test_relative_sqlite_paths_become_absolute(url: str, expected: str) -> None:
    """A relative SQLite path is resolved against dev's directory; other URLs stay as they are."""
    assert absolute_sqlite_url(SecretUrl(url), Path("/work/app")).reveal() == expected


def test_a_url_with_a_password_is_only_shown_masked() -> None:
    """A password-bearing URL is kept out of what may be printed or written, and shown masked."""
    shared = shared_settings(
        SecretUrl(f"redis://:{PASSWORD}@cache:6379/0"),
        SecretUrl("sqlite:///./orders.db"),
        cwd=Path("/work/app"),
    )
    assert shared.shown == {"DATABASE_URL": "sqlite:////work/app/orders.db"}
    assert shared.masked == {"REDIS_URL": "redis://:***@cache:6379/0"}
    everything = f"{export_line(shared)}\n{dev_env_text(shared, pid=42)}"
    assert PASSWORD not in everything
    assert "REDIS_URL=" not in everything


def test_the_export_line_quotes_values_for_the_shell() -> None:
    """The printed export line sets both variables and survives a path with a space."""
    shared = shared_settings(
        SecretUrl(PRIVATE_REDIS), SecretUrl("sqlite:///./orders.db"), cwd=Path("/home/a b")
    )
    assert export_line(shared) == (
        f"export REDIS_URL={PRIVATE_REDIS} DATABASE_URL='sqlite:////home/a b/orders.db'"
    )
    assert export_line(SharedSettings(shown={}, masked={"REDIS_URL": "redis://:***@h/0"})) is None


def test_the_file_holds_plain_lines_and_the_owner_pid() -> None:
    """`.dev-env` holds DEV_PID and NAME=value lines, unquoted, for scripts/cli to read."""
    shared = SharedSettings(
        shown={"REDIS_URL": PRIVATE_REDIS, "DATABASE_URL": "sqlite:////home/a b/orders.db"},
        masked={},
    )
    lines = dev_env_text(shared, pid=4242).splitlines()
    settings = [line for line in lines if not line.startswith("#")]
    assert settings == [
        "DEV_PID=4242",
        f"REDIS_URL={PRIVATE_REDIS}",
        "DATABASE_URL=sqlite:////home/a b/orders.db",
    ]


def test_published_file_exists_only_while_dev_runs(tmp_path: Path) -> None:
    """The file is there (private to the user) inside the block and gone after it."""
    path = tmp_path / ".dev-env"
    with published(path, "DEV_PID=1\n") as written:
        assert written
        assert path.read_text() == "DEV_PID=1\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left either


def test_a_file_another_dev_replaced_is_left_alone(tmp_path: Path) -> None:
    """On the way out only our own content is removed: a newer dev's file stays."""
    path = tmp_path / ".dev-env"
    with published(path, "DEV_PID=1\n"):
        path.write_text("DEV_PID=2\n")
    assert path.read_text() == "DEV_PID=2\n"


def test_an_unwritable_place_is_not_fatal(tmp_path: Path) -> None:
    """When the file cannot be written, dev goes on (the banner says the same) and reports it."""
    path = tmp_path / "missing-directory" / ".dev-env"
    with published(path, "DEV_PID=1\n") as written:
        assert not written
    assert not path.parent.exists()


def test_the_file_and_the_script_path_depend_on_where_dev_runs(tmp_path: Path) -> None:
    """At the checkout root: `./scripts/cli` and `.dev-env` there; elsewhere the script's full
    path and no file; outside a checkout the installed command."""
    root, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    assert cli_invocation(root, root) == "./scripts/cli"
    assert dev_env_path(root, root) == root / ".dev-env"
    assert cli_invocation(root, elsewhere) == os.path.join(root, "scripts", "cli")
    assert dev_env_path(root, elsewhere) is None
    assert cli_invocation(None, elsewhere) == "wooshpay-webhooks"
    assert dev_env_path(None, elsewhere) is None
