"""`serve --workers N`: N ingress processes sharing one port (SO_REUSEPORT), so a host uses all
its cores; the kernel spreads connections between them.

The parent only supervises: it forwards SIGTERM/SIGINT to every child (each then shuts down
gracefully), restarts a child that dies on its own, and exits once all children have stopped.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import Final

import structlog

log = structlog.get_logger("service.cli.supervisor")

# A child that keeps dying is not restarted faster than this.
RESTART_DELAY_S: Final = 1.0
POLL_INTERVAL_S: Final = 0.2


class Supervisor:
    def __init__(self, command: Sequence[str], count: int) -> None:
        self.command = list(command)
        self.count = count
        self.children: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def _spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(self.command)  # noqa: S603 - our own executable and arguments
        log.info("ingress.process_started", pid=child.pid)
        return child

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        self.children = [self._spawn() for _ in range(self.count)]
        while True:
            if self.stopping:
                return max((child.wait() for child in self.children), default=0)
            self._restart_dead_children()
            time.sleep(POLL_INTERVAL_S)  # the supervision loop's tick

    def _restart_dead_children(self) -> None:
        for index, child in enumerate(self.children):
            code = child.poll()
            if code is not None and not self.stopping:
                log.warning("ingress.process_exited", pid=child.pid, code=code)
                time.sleep(RESTART_DELAY_S)
                self.children[index] = self._spawn()


def serve_command(host: str, port: int) -> list[str]:
    """The command line of one child: a single-process `serve` that shares the port."""
    return [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--reuse-port",
    ]
