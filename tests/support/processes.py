"""Running the `wooshpay-webhooks` command line as real subprocesses, always under deadlines.

Output goes to files rather than pipes, so a chatty server can never block on a full pipe while
the test waits for it; `stop()` sends SIGTERM, waits with a deadline and returns what it printed.
Everything a command prints is also searched for canaries (tests.support.leak_watch).
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.support import leak_watch

CLI_NAME: Final = "wooshpay-webhooks"
# Every variable Settings reads: scrubbed from the inherited environment so that a developer's
# shell (or CI) cannot change what a test runs against.
SETTINGS_VARIABLES: Final = (
    "WOOSHPAY_WEBHOOK_SECRETS",
    "REDIS_URL",
    "DATABASE_URL",
    "WEBHOOK_TOLERANCE_SECONDS",
    "RETRY_MAX_ATTEMPTS",
    "RETRY_BASE_DELAY_SECONDS",
    "SWEEP_INTERVAL_SECONDS",
    "LOG_FORMAT",
    "LOG_LEVEL",
    "MAX_BODY_BYTES",
)
# Compiled bytecode for the subprocesses, outside the source tree. Start-up is dominated by
# imports; with PYTHONDONTWRITEBYTECODE set (as in some sandboxes) every command would recompile
# SQLAlchemy, aiohttp and arq from source, costing seconds per process.
PYCACHE_DIR: Final = Path(tempfile.gettempdir()) / f"wooshpay-webhooks-test-pycache-{os.getuid()}"
DEFAULT_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.05


def cli_command() -> list[str]:
    """The console script installed next to the running interpreter (no `uv run` start-up cost)."""
    beside = Path(sys.executable).parent / CLI_NAME
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(CLI_NAME)
    if found is not None:
        return [found]
    return [sys.executable, "-m", "service"]


def cli_env(**settings: str) -> dict[str, str]:
    """The inherited environment without any service setting, plus `settings`.

    Bytecode is cached in PYCACHE_DIR (never next to the sources) unless the caller already
    chose a PYTHONPYCACHEPREFIX.
    """
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS_VARIABLES}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    if "PYTHONPYCACHEPREFIX" not in env:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE_DIR)
    return env


def run_cli(
    args: Sequence[str], *, env: Mapping[str, str], timeout_s: float = DEFAULT_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to its end and capture its output (text)."""
    result = subprocess.run(
        [*cli_command(), *args],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    # Named by the command only: the arguments may hold a secret (`send --secret`).
    command = args[0] if args else CLI_NAME
    leak_watch.watch_output(f"`{command}` stdout", result.stdout)
    leak_watch.watch_output(f"`{command}` stderr", result.stderr)
    return result


def run_cli_concurrently(
    commands: Sequence[Sequence[str]],
    *,
    env: Mapping[str, str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent commands at the same time (start-up dominates); results in order."""
    with ThreadPoolExecutor(max_workers=max(len(commands), 1)) as pool:
        futures = [pool.submit(run_cli, args, env=env, timeout_s=timeout_s) for args in commands]
        return [future.result() for future in futures]


def describe(result: subprocess.CompletedProcess[str]) -> str:
    """A failure message showing everything a command printed."""
    return (
        f"command {result.args!r} exited {result.returncode}\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


@dataclass(frozen=True, slots=True)
class Stopped:
    """How a background process ended: exit code, output, and how long SIGTERM took."""

    returncode: int
    stdout: str
    stderr: str
    stop_duration_s: float


@dataclass
class CliProcess:
    """A CLI command running in the background, its output captured in files."""

    args: list[str]
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def output(self) -> tuple[str, str]:
        return (
            self.stdout_path.read_text(errors="replace"),
            self.stderr_path.read_text(errors="replace"),
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout_s: float = STOP_TIMEOUT_S) -> Stopped:
        """SIGTERM, then wait up to `timeout_s`; a process that lingers is killed and fails."""
        started = time.monotonic()
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            stdout, stderr = self.output()
            raise AssertionError(
                f"{self.args!r} did not exit within {timeout_s} s of SIGTERM\n"
                f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            ) from None
        elapsed = time.monotonic() - started
        stdout, stderr = self.output()
        return Stopped(self.process.returncode, stdout, stderr, elapsed)

    def kill(self) -> None:
        """Last-resort cleanup; idempotent."""
        if self.running():
            self.process.kill()
        self.process.wait()


def start_cli(args: Sequence[str], *, env: Mapping[str, str], workdir: Path) -> CliProcess:
    """Start a CLI command in the background; its stdout and stderr go to files in `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    stem = f"{args[0] if args else 'cli'}-{time.monotonic_ns()}"
    stdout_path, stderr_path = workdir / f"{stem}.out", workdir / f"{stem}.err"
    command = [*cli_command(), *args]
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            command, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    leak_watch.watch_file(stdout_path, process)
    leak_watch.watch_file(stderr_path, process)
    return CliProcess(command, process, stdout_path, stderr_path)


@contextmanager
def running_cli(
    args: Sequence[str], *, env: Mapping[str, str], workdir: Path
) -> Iterator[CliProcess]:
    """`start_cli`, killing the process on the way out if the test did not stop it."""
    started = start_cli(args, env=env, workdir=workdir)
    try:
        yield started
    finally:
        started.kill()


def http_get(host: str, port: int, path: str, *, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One GET; returns status and body (raises OSError when nothing answers)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_for_http(
    host: str,
    port: int,
    path: str = "/healthz",
    *,
    process: CliProcess | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Poll `path` until it answers 200; fail early (with its output) if `process` exits."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            stdout, stderr = process.output()
            raise AssertionError(
                f"{process.args!r} exited {process.process.returncode} before "
                f"{path} answered\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
            )
        try:
            status, _ = http_get(host, port, path, timeout_s=1.0)
        except OSError as error:
            last_error = f"{type(error).__name__}: {error}"
        else:
            if status == 200:
                return
            last_error = f"HTTP {status}"
        time.sleep(POLL_INTERVAL_S)  # poll interval of a deadline-bounded wait
    raise AssertionError(f"http://{host}:{port}{path} not 200 within {timeout_s} s: {last_error}")
