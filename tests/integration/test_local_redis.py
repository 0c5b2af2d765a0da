"""Integration tests for service.devtools.local_redis against real redis-server processes.

Every server a test starts is private (loopback, free port) and is stopped by a fixture. The
shared Redis on 127.0.0.1:6379 is only ever PINGed, never stopped or flushed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from structlog.testing import capture_logs

from service.devtools.local_redis import (
    LocalRedis,
    RedisUnavailable,
    ensure_redis,
    find_redis_server,
    free_port,
    redis_reachable,
    start_local_redis,
)

SHARED_URL = "redis://127.0.0.1:6379/0"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> bool:
    """Poll `condition` until it holds or the deadline passes; return whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)  # poll interval of a deadline-bounded wait, not a fixed delay
    return condition()


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture
def servers() -> Iterator[list[LocalRedis]]:
    """A list to put started servers in; all of them are stopped at teardown, even on failure."""
    started: list[LocalRedis] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def local_redis(servers: list[LocalRedis]) -> LocalRedis:
    """A freshly started private redis-server, stopped at teardown."""
    server = start_local_redis()
    servers.append(server)
    return server


def test_reachable_on_shared_redis() -> None:
    """The shared Redis on 127.0.0.1:6379 is reported reachable."""
    if not port_open(6379):
        pytest.skip("no shared Redis listening on 127.0.0.1:6379 on this machine")
    assert redis_reachable(SHARED_URL) is True


def test_unreachable_port_is_false_quickly() -> None:
    """A port nobody listens on is reported unreachable well within the timeout."""
    started = time.monotonic()
    assert redis_reachable(f"redis://127.0.0.1:{free_port()}/0", timeout_s=1.0) is False
    assert time.monotonic() - started < 1.0


def test_silent_listener_is_false_within_timeout() -> None:
    """A listener that accepts but never answers is unreachable after about timeout_s."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        started = time.monotonic()
        assert redis_reachable(f"redis://127.0.0.1:{port}/0", timeout_s=0.3) is False
        assert time.monotonic() - started < 1.5


def test_malformed_url_is_false() -> None:
    """A URL redis-py cannot parse is reported unreachable instead of raising."""
    assert redis_reachable("not a redis url") is False


def test_started_server_answers_and_stop_removes_it(servers: list[LocalRedis]) -> None:
    """start_local_redis gives a working server; stop() makes it unreachable and gone."""
    server = start_local_redis()
    servers.append(server)
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.port != 6379
    with redis.Redis.from_url(server.url) as client:
        assert client.ping() is True
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"
    workdir = server.workdir
    assert workdir is not None
    assert workdir.is_dir()

    server.stop()

    assert server.process.poll() is not None
    assert redis_reachable(server.url, timeout_s=0.5) is False
    assert not workdir.exists()
    server.stop()  # idempotent


def test_restart_keeps_port_and_loses_data(local_redis: LocalRedis) -> None:
    """restart() brings a new server up on the same port with none of the old data."""
    port, old_pid = local_redis.port, local_redis.process.pid
    with redis.Redis.from_url(local_redis.url) as client:
        client.set("survives", "no")

    local_redis.restart()

    assert local_redis.port == port
    assert local_redis.process.pid != old_pid
    with redis.Redis.from_url(local_redis.url) as client:
        assert client.ping() is True
        assert client.get("survives") is None


def test_ensure_redis_uses_reachable_url(local_redis: LocalRedis) -> None:
    """ensure_redis returns a reachable URL unchanged and starts nothing."""
    url, started = ensure_redis(local_redis.url, allow_install=False)
    assert url == local_redis.url
    assert started is None


def test_ensure_redis_starts_private_server_when_unreachable(servers: list[LocalRedis]) -> None:
    """ensure_redis starts a private server for an unanswering URL, logging no secrets."""
    unreachable = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with capture_logs() as logs:
        url, started = ensure_redis(unreachable, allow_install=False)
    assert started is not None
    servers.append(started)
    assert url == started.url != unreachable
    assert redis_reachable(url)
    assert "s3cret" not in repr(logs)
    assert any(e["event"] == "redis.local_started" and e["port"] == started.port for e in logs)


def test_ensure_redis_explains_when_no_redis_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no reachable Redis and no redis-server on PATH, the error says how to get one."""
    monkeypatch.setenv("PATH", str(tmp_path))
    unreachable = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable, match="apt-get install redis-server") as caught:
        ensure_redis(unreachable, allow_install=False)
    assert "REDIS_URL" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_find_redis_server_without_install_finds_binary() -> None:
    """find_redis_server locates an executable redis-server on this machine without installing."""
    found = find_redis_server(allow_install=False)
    assert found is not None
    assert os.access(found, os.X_OK)


def test_start_failure_raises() -> None:
    """A redis_server that exits at once makes start_local_redis raise RedisUnavailable."""
    with pytest.raises(RedisUnavailable, match="exited with code 1"):
        start_local_redis(redis_server="/bin/false", startup_timeout_s=5.0)


def test_missing_binary_raises(tmp_path: Path) -> None:
    """A redis_server path that does not exist raises RedisUnavailable saying how to install it."""
    with pytest.raises(RedisUnavailable, match="apt-get install redis-server"):
        start_local_redis(redis_server=str(tmp_path / "redis-server"))


def test_taken_port_raises_with_log_tail(local_redis: LocalRedis) -> None:
    """Starting on a port already in use raises with redis-server's own log explaining why."""
    with pytest.raises(RedisUnavailable, match="Address already in use"):
        start_local_redis(port=local_redis.port, startup_timeout_s=5.0)
    assert redis_reachable(local_redis.url)  # the server holding the port is untouched


@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
def test_server_dies_with_killed_parent() -> None:
    """When the process that started the server is SIGKILLed, the server goes away too."""
    script = textwrap.dedent(
        """
        import sys
        from service.devtools.local_redis import start_local_redis
        server = start_local_redis()
        print("READY", server.port, server.process.pid, flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        # Log lines come first; the child's own startup deadline bounds this loop.
        ready = next(line for line in parent.stdout if line.startswith("READY"))
        _, port, pid = ready.split()
        url = f"redis://127.0.0.1:{port}/0"
        try:
            assert redis_reachable(url)
            parent.kill()
            parent.wait()
            assert wait_for(lambda: not redis_reachable(url, timeout_s=0.2))
        finally:
            if redis_reachable(url, timeout_s=0.2):  # do not leak it if the assertion failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
