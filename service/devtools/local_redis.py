"""Finding a Redis to talk to, and starting a private one when there is none.

The README promises that on a fresh Debian/Ubuntu machine one command runs the service and one
runs the tests. Both need Redis, so: use the configured `REDIS_URL` when it answers; otherwise
start a throw-away `redis-server` child on a free loopback port (installing the package with
apt-get when we are allowed to); otherwise fail with a message that says how to get one.

The private server never persists anything (`--save ''`, `--appendonly no`), so stopping or
restarting it loses all data; tests rely on that to simulate a Redis restart.

URLs may carry passwords, so they are never logged whole: only host and port.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import redis
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "LocalRedis",
    "RedisUnavailable",
    "ensure_redis",
    "find_redis_server",
    "free_port",
    "redis_reachable",
    "start_local_redis",
]

logger = structlog.get_logger(__name__)

LOOPBACK: Final = "127.0.0.1"
STOP_TIMEOUT_S: Final = 5.0
# How long one readiness probe may block: short, so the deadline loop stays responsive.
PROBE_TIMEOUT_S: Final = 0.5
# Pause between readiness probes; it is a wait on the child, so it ends early if the child exits.
PROBE_INTERVAL_S: Final = 0.05
LOG_TAIL_LINES: Final = 20
# Auto-picked ports can be taken between free_port() and the child's bind; retry that race.
PORT_ATTEMPTS: Final = 3
APT_TIMEOUT_S: Final = 900.0
_PR_SET_PDEATHSIG: Final = 1  # from <linux/prctl.h>

HOW_TO_GET_REDIS: Final = (
    "Install it with `sudo apt-get install redis-server` (done automatically when running as "
    "root or with passwordless sudo), or set REDIS_URL to a Redis you run, "
    "e.g. REDIS_URL=redis://localhost:6379/0."
)


class RedisUnavailable(RuntimeError):
    """No usable Redis; the message says what to do about it."""


class _PortInUse(RedisUnavailable):
    """The child could not bind its port: worth retrying on another one when we picked it."""


def _endpoint(url: str) -> dict[str, object]:
    """Host and port of `url` for logs: never the whole URL, which may hold a password."""
    try:
        parts = urlsplit(url)
        return {"host": parts.hostname, "port": parts.port}
    except ValueError:  # e.g. a non-numeric port: still must not echo the URL
        return {"host": None, "port": None}


def _probe_client(url: str, timeout_s: float) -> redis.Redis:
    # No retries: a probe must answer within its timeout, not a multiple of it.
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )


def redis_reachable(url: str, *, timeout_s: float = 1.0) -> bool:
    """True when a Redis at `url` answers PING within `timeout_s`; never raises."""
    try:
        client = _probe_client(url, timeout_s)
    except Exception:  # a malformed URL is simply "not reachable"
        return False
    try:
        return bool(client.ping())
    except Exception:  # refused, timed out, auth failure, not Redis at all...
        return False
    finally:
        client.close()


def _answering_pid(url: str) -> int | None:
    """Process id of the Redis answering at `url`, or None when nothing answers."""
    try:
        client = _probe_client(url, PROBE_TIMEOUT_S)
        try:
            info = client.info("server")
        finally:
            client.close()
        # The sync client returns a dict; the shared type also allows an awaitable.
        return int(info["process_id"]) if isinstance(info, dict) else None
    except Exception:  # not up yet (or not Redis): the caller keeps waiting until its deadline
        return None


def free_port() -> int:
    """A TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _death_signal_hook() -> Callable[[], None] | None:
    """A preexec hook making the child get SIGTERM when we die, so a killed parent leaks no Redis.

    Linux only. Only from the main thread: PR_SET_PDEATHSIG fires when the *thread* that forked
    exits, which would kill the server early if we were called from a short-lived worker thread.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    try:
        # Resolved here, in the parent: after fork the child should not load libraries.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return hook


def _redis_command(redis_server: str, port: int, workdir: Path) -> list[str]:
    return [
        redis_server,
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        # No persistence: a restart must lose data, and nothing is left behind on disk.
        "--save",
        "",
        "--appendonly",
        "no",
        # Stay our child, so we can wait on it and stop it.
        "--daemonize",
        "no",
        "--dir",
        str(workdir),
    ]


def _spawn(redis_server: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Start the child with stdout and stderr in a log file in `workdir`.

    Redirecting output (rather than `--logfile`) also captures errors redis-server prints before
    it has parsed its configuration, and anything a non-Redis binary says.
    """
    log_path = workdir / "redis-server.log"
    try:
        with log_path.open("wb") as log:
            return subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                _redis_command(redis_server, port, workdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # Own session: Ctrl-C in the terminal reaches the service, which then stops
                # Redis itself after its graceful shutdown, instead of Redis vanishing first.
                start_new_session=True,
                # The hook only makes async-signal-safe calls (prctl, getppid), so it is fine
                # even when other threads exist.
                preexec_fn=_death_signal_hook(),
            )
    except OSError as exc:
        raise RedisUnavailable(
            f"Cannot run redis-server at {redis_server}: {exc}. {HOW_TO_GET_REDIS}"
        ) from exc


def _log_tail(workdir: Path) -> str:
    try:
        lines = (workdir / "redis-server.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no log output)"
    return "\n".join(lines[-LOG_TAIL_LINES:]) or "(no log output)"


def terminate(process: subprocess.Popen[bytes], *, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop `process`: SIGTERM, wait up to `timeout_s`, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], port: int, timeout_s: float) -> None:
    """Return once *our* child answers on `port`; raise (with the reason) otherwise."""
    url = f"redis://{LOOPBACK}:{port}/0"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Compare pids so another Redis that grabbed the port is not mistaken for ours.
        if _answering_pid(url) == process.pid:
            return
        try:
            process.wait(timeout=PROBE_INTERVAL_S)
        except subprocess.TimeoutExpired:
            continue
        raise RedisUnavailable(f"redis-server exited with code {process.returncode} on start")
    raise RedisUnavailable(f"redis-server did not answer on {LOOPBACK}:{port} within {timeout_s}s")


def _launch(redis_server: str, port: int, timeout_s: float) -> tuple[subprocess.Popen[bytes], Path]:
    """Start one server on `port` and wait for it; clean up fully when it does not come up."""
    workdir = Path(tempfile.mkdtemp(prefix="local-redis-"))
    try:
        process = _spawn(redis_server, port, workdir)
    except RedisUnavailable:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        _wait_until_ready(process, port, timeout_s)
    except RedisUnavailable as exc:
        terminate(process)
        tail = _log_tail(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
        kind = _PortInUse if "Address already in use" in tail else RedisUnavailable
        raise kind(
            f"{exc}. Last lines of its log:\n{tail}\n"
            "Fix the problem above, or set REDIS_URL to a Redis you run."
        ) from None
    return process, workdir


@dataclass
class LocalRedis:
    """A private redis-server child process we started (see `start_local_redis`)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    redis_server: str = field(default="redis-server", repr=False)
    workdir: Path | None = field(default=None, repr=False)
    startup_timeout_s: float = field(default=10.0, repr=False)

    def stop(self) -> None:
        """Terminate the server (killing it if it lingers) and remove its directory; idempotent."""
        running = self.process.poll() is None
        terminate(self.process)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
        if running:
            logger.info("redis.local_stopped", port=self.port, pid=self.process.pid)

    def restart(self) -> None:
        """Stop, then start a fresh server on the same port; all data is lost (no persistence)."""
        self.stop()
        self.process, self.workdir = _launch(self.redis_server, self.port, self.startup_timeout_s)
        logger.info("redis.local_restarted", port=self.port, pid=self.process.pid)


def _start_on_free_port(
    redis_server: str, timeout_s: float
) -> tuple[int, subprocess.Popen[bytes], Path]:
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = free_port()
        try:
            return (port, *_launch(redis_server, port, timeout_s))
        except _PortInUse:
            if attempt == PORT_ATTEMPTS:
                raise
            logger.info("redis.port_taken", port=port, attempt=attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def start_local_redis(
    *, port: int | None = None, redis_server: str | None = None, startup_timeout_s: float = 10.0
) -> LocalRedis:
    """Start redis-server bound to 127.0.0.1 on a free port (or `port`) and wait until it answers.

    No persistence, no daemonizing, a temporary directory as `--dir` holding its log. Raises
    RedisUnavailable, with the log tail, when the server exits or does not answer in time.
    """
    binary = redis_server or find_redis_server(allow_install=False)
    if binary is None:
        raise RedisUnavailable(f"redis-server is not installed. {HOW_TO_GET_REDIS}")
    if port is None:
        port, process, workdir = _start_on_free_port(binary, startup_timeout_s)
    else:
        process, workdir = _launch(binary, port, startup_timeout_s)
    logger.info("redis.local_started", port=port, pid=process.pid)
    return LocalRedis(
        url=f"redis://{LOOPBACK}:{port}/0",
        port=port,
        process=process,
        redis_server=binary,
        workdir=workdir,
        startup_timeout_s=startup_timeout_s,
    )


def _privilege_prefix() -> list[str] | None:
    """Command prefix that runs apt-get as root without prompting, or None when we cannot."""
    if sys.platform == "win32":
        return None
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo is None:
        return None
    try:
        # -n: fail instead of prompting, so an unattended run never hangs on a password.
        probe = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [sudo, "-n", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return [sudo, "-n"] if probe.returncode == 0 else None


def _apt_get(prefix: list[str], apt: str, *args: str) -> bool:
    # Through `env` because sudo resets the environment; noninteractive so no prompt can block.
    env = shutil.which("env") or "/usr/bin/env"
    command = [*prefix, env, "DEBIAN_FRONTEND=noninteractive", apt, *args]
    try:
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("redis.install_failed", step=args[0], error=str(exc))
        return False
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        logger.warning("redis.install_failed", step=args[0], code=result.returncode, output=tail)
        return False
    return True


def _install_redis_server() -> bool:
    """Install the redis-server package with apt-get when we are root or have passwordless sudo."""
    apt = shutil.which("apt-get")
    prefix = _privilege_prefix()
    if apt is None or prefix is None:
        logger.info("redis.install_skipped", apt_get=apt is not None, privileged=prefix is not None)
        return False
    logger.info("redis.installing", package="redis-server", sudo=bool(prefix))
    return _apt_get(prefix, apt, "update", "-q") and _apt_get(
        prefix, apt, "install", "-y", "-q", "--no-install-recommends", "redis-server"
    )


def find_redis_server(*, allow_install: bool) -> str | None:
    """Path of redis-server; installs it with apt-get when allowed and permitted, else None."""
    found = shutil.which("redis-server")
    if found is not None or not allow_install:
        return found
    if not _install_redis_server():
        return None
    return shutil.which("redis-server")


def ensure_redis(url: str, *, allow_install: bool = True) -> tuple[str, LocalRedis | None]:
    """Return (usable_url, started): `url` itself when it answers, else a private server's url.

    A started server is stopped at interpreter exit; callers may stop it earlier. Raises
    RedisUnavailable, saying how to get Redis, when neither works.
    """
    if redis_reachable(url):
        logger.info("redis.using_configured", **_endpoint(url))
        return url, None
    logger.info("redis.unreachable", **_endpoint(url))
    binary = find_redis_server(allow_install=allow_install)
    if binary is None:
        endpoint = _endpoint(url)
        raise RedisUnavailable(
            f"Redis is not reachable at {endpoint['host']}:{endpoint['port']} (REDIS_URL) and "
            f"no redis-server program is available to start a private one. {HOW_TO_GET_REDIS}"
        )
    started = start_local_redis(redis_server=binary)
    atexit.register(started.stop)
    return started.url, started
