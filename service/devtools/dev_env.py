"""What `dev` shares with the developer's other shells: the settings it runs on, and how to call it.

`dev` may start a private Redis on a free port, and its default order store is a path relative
to where it runs; a command typed in another shell would otherwise reach another Redis (or none)
and another file. So its banner prints the REDIS_URL and DATABASE_URL it uses as an `export`
line, and when it runs at the root of a checkout it also writes them to `.dev-env` there while it
runs, which `scripts/cli` reads. A URL that carries a password is neither printed nor written,
only shown masked: the user configured it and can set it again.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from service.secrets import SecretUrl

DEV_ENV_NAME: Final = ".dev-env"
CLI_SCRIPT: Final = Path("scripts") / "cli"
INSTALLED_CLI: Final = "wooshpay-webhooks"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SharedSettings:
    """The variables another shell needs, split by whether their value may be shown."""

    shown: dict[str, str]  # no password: printed and written as they are
    masked: dict[str, str]  # carries a password: printed masked, never written


def shared_settings(redis_url: SecretUrl, database_url: SecretUrl, *, cwd: Path) -> SharedSettings:
    """REDIS_URL and DATABASE_URL as another shell must set them (SQLite paths made absolute)."""
    shown: dict[str, str] = {}
    masked: dict[str, str] = {}
    urls = {"REDIS_URL": redis_url, "DATABASE_URL": absolute_sqlite_url(database_url, cwd)}
    for name, url in urls.items():
        value = url.reveal()
        # A line break would end the `.dev-env` line early; no valid URL holds one.
        if url.masked() == value and "\n" not in value and "\r" not in value:
            shown[name] = value
        else:
            masked[name] = url.masked()
    return SharedSettings(shown, masked)


def absolute_sqlite_url(url: SecretUrl, cwd: Path) -> SecretUrl:
    """The URL with a relative SQLite file path made absolute against `cwd`; others unchanged.

    The default `sqlite:///./orders.db` means a different file in every directory.
    """
    try:
        parsed = make_url(url.reveal())
    except ArgumentError:
        return url
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return url
    if path.startswith("file:") or os.path.isabs(path):
        return url
    absolute = os.path.normpath(cwd / path)
    return SecretUrl(parsed.set(database=absolute).render_as_string(hide_password=False))


def export_line(shared: SharedSettings) -> str | None:
    """`export REDIS_URL=... DATABASE_URL=...` for a POSIX shell, or None when nothing is shown."""
    if not shared.shown:
        return None
    assignments = (f"{name}={shlex.quote(value)}" for name, value in shared.shown.items())
    return "export " + " ".join(assignments)


def checkout_root() -> Path | None:
    """The source checkout this package runs from, when it has `scripts/cli` (an editable
    install, as `scripts/dev` makes); None for an installed wheel, e.g. in the container image."""
    root = Path(__file__).resolve().parents[2]  # service/devtools/dev_env.py
    return root if (root / CLI_SCRIPT).is_file() else None


def cli_invocation(root: Path | None, cwd: Path) -> str:
    """How the developer calls the command line from `cwd`, as printed in the banner."""
    if root is None:
        return INSTALLED_CLI
    script = root / CLI_SCRIPT
    if _same_directory(root, cwd):
        return f"./{CLI_SCRIPT.as_posix()}"
    return shlex.quote(str(script))


def dev_env_path(root: Path | None, cwd: Path) -> Path | None:
    """Where `dev` publishes its settings: `.dev-env` at the checkout root when it runs there
    (where `scripts/cli` looks); elsewhere nothing reads such a file, so there is none."""
    if root is None or not _same_directory(root, cwd):
        return None
    return root / DEV_ENV_NAME


def dev_env_text(shared: SharedSettings, pid: int) -> str:
    """The file's lines: plain NAME=value, read line by line by `scripts/cli` (never sourced)."""
    masked = shared.masked
    lines = [
        f"# Settings of the running `wooshpay-webhooks dev` (process {pid}), read by scripts/cli;",
        "# removed when it stops, ignored by scripts/cli once that process is gone.",
        f"DEV_PID={pid}",
        *(f"{name}={value}" for name, value in shared.shown.items()),
        *(f"# {name} carries a password: not written here, set it yourself" for name in masked),
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def published(path: Path | None, text: str) -> Iterator[bool]:
    """Write `text` to `path` for the duration of the block; yield whether it was written.

    Written atomically (no reader sees half a file), private to the user. On the way out the file
    is removed only if it still holds our text: another `dev` may have replaced it since.
    """
    written = path is not None and _write(path, text)
    try:
        yield written
    finally:
        if path is not None and written:
            _remove_if_ours(path, text)


def _write(path: Path, text: str) -> bool:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except OSError as error:
        # Not fatal: the banner's export line says the same thing.
        log.warning("dev.env_file_not_written", path=str(path), error=type(error).__name__)
        temporary.unlink(missing_ok=True)
        return False
    return True


def _remove_if_ours(path: Path, text: str) -> None:
    # Already gone, or unreadable: either way not ours to fix.
    with suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            path.unlink()


def _same_directory(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False
