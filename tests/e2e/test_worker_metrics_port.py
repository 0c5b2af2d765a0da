"""Two workers on one host: the second cannot bind the metrics port and says so in one line."""

from __future__ import annotations

from pathlib import Path

from service.devtools.local_redis import free_port
from tests.support.processes import cli_env, run_cli, running_cli, wait_for_http


def test_second_worker_on_the_same_metrics_port_fails_in_one_line(
    tmp_path: Path, redis_url: str
) -> None:
    """A worker whose metrics port is held by another worker exits 2 at start with one line that
    names --metrics-port, and no traceback; the first worker keeps serving."""
    port = free_port()
    env = cli_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'orders.db'}", REDIS_URL=redis_url, LOG_LEVEL="INFO"
    )
    assert run_cli(["migrate"], env=env).returncode == 0
    args = ["worker", "--metrics-port", str(port)]
    with running_cli(args, env=env, workdir=tmp_path / "first") as first:
        wait_for_http("127.0.0.1", port, "/healthz", process=first)

        second = run_cli(args, env=env)

        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, second.stderr
        assert "--metrics-port" in errors[0]
        assert str(port) in errors[0]
        assert "Traceback" not in second.stderr
        assert first.running()
        wait_for_http("127.0.0.1", port, "/healthz", process=first)
        assert first.stop().returncode == 0
