"""End to end: what `dev` tells the developer to type in another shell works there as printed.

`dev` runs as a real subprocess in a temporary directory (not the checkout root: it writes no
`.dev-env` and prints scripts/cli's full path) with a REDIS_URL where nothing answers, so it
starts its private Redis: the case where another shell must be told which Redis to use. Its
printed commands run in new `bash` shells without any service setting in their environment.
The last tests drive `scripts/cli`'s reading of `.dev-env` in a copy of the script, with a
stand-in `uv` that reports what it was asked to run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from service.devtools.local_redis import LocalRedis, free_port, redis_reachable, start_local_redis
from tests.support.processes import (
    CliProcess,
    cli_command,
    cli_env,
    describe,
    run_cli,
    wait_for_http,
)
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
CLI_SCRIPT = shlex.quote(str(ROOT / "scripts" / "cli"))
HOST = "127.0.0.1"
PASSWORD = "hunter2-do-not-print"
START_TIMEOUT_S = 60.0
# A command through scripts/cli starts uv and then Python: allow for a slow shared machine.
SHELL_TIMEOUT_S = 120.0
APPLY_TIMEOUT_S = 30.0


@dataclass
class Dev:
    """A running `dev`, the directory it runs in, and what it printed."""

    process: CliProcess
    workdir: Path

    def banner(self) -> list[str]:
        """The lines of its instructions (log lines, which are JSON, left out)."""
        _, stderr = self.process.output()
        lines = stderr.splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("wooshpay-webhooks dev:"))
        return [line for line in lines[start:] if not line.startswith("{")]

    def export_line(self) -> str:
        exports = [line.strip() for line in self.banner() if line.startswith("  export ")]
        assert len(exports) == 1, "\n".join(self.banner())
        return exports[0]

    def exported(self) -> dict[str, str]:
        """The settings the export line sets, as a shell would read them."""
        words = shlex.split(self.export_line())
        assert words[0] == "export"
        return dict(word.split("=", 1) for word in words[1:])

    def commands(self) -> list[str]:
        prefix = f"  {CLI_SCRIPT} "
        return [line.strip() for line in self.banner() if line.startswith(prefix)]


def _start_dev(workdir: Path, env: dict[str, str]) -> Dev:
    """`dev` on a free port in `workdir`, waited for: its instructions, then /readyz."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [*cli_command(), "dev", "--host", HOST, "--port", str(port)]
    stdout_path, stderr_path = workdir / "dev.out", workdir / "dev.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            args, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    dev = Dev(CliProcess(args, process, stdout_path, stderr_path), workdir)
    try:
        wait_until(
            lambda: "orders show order_1" in dev.process.output()[1] or not dev.process.running(),
            timeout_s=START_TIMEOUT_S,
        )
        wait_for_http(HOST, port, "/readyz", process=dev.process)
    except BaseException:
        dev.process.kill()
        raise
    return dev


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    """`dev` that had to start a private Redis. One attempt per event and no sweep, so a failed
    event is applied only when a replay reaches its worker."""
    env = cli_env(
        REDIS_URL=f"redis://{HOST}:{free_port()}/0",
        RETRY_MAX_ATTEMPTS="1",
        SWEEP_INTERVAL_SECONDS="3600",
        LOG_FORMAT="json",
    )
    started = _start_dev(tmp_path_factory.mktemp("dev"), env)
    yield started
    started.process.stop()


def in_new_shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`script` in a new bash whose environment holds no service setting."""
    return subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
        check=False,
    )


def _order_status(env: dict[str, str], order_id: str) -> str | None:
    result = run_cli(["orders", "show", order_id, "--json"], env=env)
    if result.returncode != 0:
        return None
    status = json.loads(result.stdout)["status"]
    assert isinstance(status, str)
    return status


def test_the_banner_names_the_private_redis_and_an_absolute_store(dev: Dev) -> None:
    """The export line names the Redis dev started and its order store by absolute path."""
    exported = dev.exported()
    assert set(exported) == {"REDIS_URL", "DATABASE_URL"}
    assert redis_reachable(exported["REDIS_URL"])
    assert exported["DATABASE_URL"] == f"sqlite:///{dev.workdir.resolve() / 'orders.db'}"
    assert not (dev.workdir / ".dev-env").exists()  # only at the checkout root


def test_the_printed_commands_work_in_a_new_shell(dev: Dev, tmp_path: Path) -> None:
    """The printed export line and commands, run as printed in a new shell, get order_1 paid."""
    commands = dev.commands()
    assert [command.split()[1:3] for command in commands] == [
        ["orders", "add"],
        ["send", "payment_intent.succeeded"],
        ["orders", "show"],
    ], "\n".join(dev.banner())
    for command in commands:
        result = in_new_shell(f"{dev.export_line()}\n{command}", cwd=tmp_path)
        assert result.returncode == 0, describe(result)
    env = cli_env(**dev.exported())
    wait_until(lambda: _order_status(env, "order_1") == "paid", timeout_s=APPLY_TIMEOUT_S)


def test_a_replay_from_another_shell_reaches_the_dev_worker(dev: Dev, tmp_path: Path) -> None:
    """With the printed settings, `events replay` in another shell reaches dev's private Redis:
    a failed event is applied (nothing else would retry it)."""
    env = cli_env(**dev.exported())
    send = next(command for command in dev.commands() if " send " in command)
    sent = in_new_shell(f"{dev.export_line()}\n{send.replace('order_1', 'order_9')}", tmp_path)
    assert sent.returncode == 0, describe(sent)
    failed = ["events", "list", "--status", "failed", "--json"]
    wait_until(lambda: json.loads(run_cli(failed, env=env).stdout) != [], timeout_s=APPLY_TIMEOUT_S)
    added = run_cli(["orders", "add", "order_9", "--amount", "2000", "--currency", "EUR"], env=env)
    assert added.returncode == 0, describe(added)

    replay = in_new_shell(f"{dev.export_line()}\n{CLI_SCRIPT} events replay --failed", tmp_path)

    assert replay.returncode == 0, describe(replay)
    wait_until(lambda: _order_status(env, "order_9") == "paid", timeout_s=APPLY_TIMEOUT_S)


@pytest.fixture
def password_redis() -> Iterator[LocalRedis]:
    """A private Redis that requires a password."""
    server = start_local_redis()
    client = redis.Redis.from_url(server.url)
    try:
        client.config_set("requirepass", PASSWORD)
    finally:
        client.close()
    yield server
    server.stop()


def test_a_redis_password_is_never_printed(password_redis: LocalRedis, tmp_path: Path) -> None:
    """A REDIS_URL with a password is shown masked, never whole, and left out of the export."""
    url = f"redis://:{PASSWORD}@{HOST}:{password_redis.port}/0"
    started = _start_dev(tmp_path / "dev", cli_env(REDIS_URL=url, LOG_FORMAT="json"))
    try:
        banner = "\n".join(started.banner())
        assert f"  REDIS_URL: redis://:***@{HOST}:{password_redis.port}/0 " in banner
        assert set(started.exported()) == {"DATABASE_URL"}
    finally:
        stopped = started.process.stop()
    assert PASSWORD not in stopped.stdout + stopped.stderr


# ---- scripts/cli and .dev-env -------------------------------------------------------------------

STAND_IN_UV = """#!/bin/sh
printf 'REDIS_URL=%s\\n' "${REDIS_URL-unset}"
printf 'DATABASE_URL=%s\\n' "${DATABASE_URL-unset}"
printf 'ARGS=%s\\n' "$*"
"""


@dataclass
class ScriptCopy:
    """scripts/cli in a throw-away checkout, with a `uv` that reports what it was asked to run."""

    root: Path
    path: str

    def run(self, **env: str) -> tuple[dict[str, str], str]:
        """Run `cli orders list`; return what `uv` saw and what the script printed on stderr."""
        result = subprocess.run(
            [str(self.root / "scripts" / "cli"), "orders", "list"],
            cwd=self.root.parent,
            env={**cli_env(**env), "PATH": self.path},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, describe(result)
        seen = dict(line.split("=", 1) for line in result.stdout.splitlines())
        return seen, result.stderr

    def write_dev_env(self, pid: int, *lines: str) -> None:
        text = "\n".join(["# written by dev", f"DEV_PID={pid}", *lines]) + "\n"
        (self.root / ".dev-env").write_text(text)


@pytest.fixture
def script(tmp_path: Path) -> ScriptCopy:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    for name in ("cli", "bootstrap.sh"):
        shutil.copy2(ROOT / "scripts" / name, root / "scripts" / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uv").write_text(STAND_IN_UV)
    (bin_dir / "uv").chmod(0o755)
    return ScriptCopy(root, f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_cli_without_dev_uses_the_checkout_store(script: ScriptCopy) -> None:
    """No `.dev-env`: the checkout's orders.db (dev's default), REDIS_URL untouched, the project's
    environment from any directory."""
    seen, _ = script.run()
    assert seen["DATABASE_URL"] == f"sqlite:///{script.root}/orders.db"
    assert seen["REDIS_URL"] == "unset"
    assert (
        seen["ARGS"]
        == f"run --project {script.root} --frozen --quiet wooshpay-webhooks orders list"
    )


def test_cli_takes_a_running_devs_settings(script: ScriptCopy, tmp_path: Path) -> None:
    """A live dev's `.dev-env` supplies both URLs, taken literally (never run as shell code), and
    the script says where they came from."""
    planted = tmp_path / "planted"
    redis_url = f"redis://127.0.0.1:40123/0?name=$(touch {planted})"
    script.write_dev_env(os.getpid(), f"REDIS_URL={redis_url}", "DATABASE_URL=sqlite:////a b/x.db")
    seen, stderr = script.run()
    assert seen["REDIS_URL"] == redis_url
    assert seen["DATABASE_URL"] == "sqlite:////a b/x.db"
    assert ".dev-env" in stderr
    assert not planted.exists()


def test_cli_prefers_the_environment_to_dev_env(script: ScriptCopy) -> None:
    """A variable already set in the environment wins over the file; the other one comes from it."""
    script.write_dev_env(
        os.getpid(), "REDIS_URL=redis://127.0.0.1:40123/0", "DATABASE_URL=sqlite:////x.db"
    )
    seen, _ = script.run(REDIS_URL="redis://mine:6379/0")
    assert seen["REDIS_URL"] == "redis://mine:6379/0"
    assert seen["DATABASE_URL"] == "sqlite:////x.db"


def test_cli_ignores_the_file_of_a_dev_that_is_gone(script: ScriptCopy) -> None:
    """A `.dev-env` whose dev process no longer runs (killed, terminal closed) is ignored."""
    script.write_dev_env(_dead_pid(), "REDIS_URL=redis://127.0.0.1:40123/0")
    seen, stderr = script.run()
    assert seen["REDIS_URL"] == "unset"
    assert seen["DATABASE_URL"] == f"sqlite:///{script.root}/orders.db"
    assert ".dev-env" not in stderr
