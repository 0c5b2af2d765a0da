"""The PostgreSQL proxy of the soak, in a process of its own, driven over its stdin.

Every database round trip of five service processes passes through it, so it gets its own
interpreter (and GIL) rather than competing with the harness's HTTP client. It wraps
`tests.support.tcp_proxy.TcpProxy`: `cut` closes the listener and every live connection (new
connects are refused, as when the database host is down), `restore` listens again on the port.

Protocol: the child prints `port <n>` when listening; each `cut` / `restore` line on its stdin is
answered with `cut` / `restored` once done; end of input stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Final

from tests.support.tcp_proxy import TcpProxy

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
ANSWER_TIMEOUT_S: Final = 15.0


class ProxyProcess:
    """The harness's handle on the proxy child."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self._process = process
        self.port = port

    @classmethod
    async def start(cls, target_host: str, target_port: int) -> ProxyProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.chaos.proxy",
            target_host,
            str(target_port),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO_ROOT,
        )
        proxy = cls(process, 0)
        line = await proxy._read_line()
        if not line.startswith("port "):
            await proxy.close()
            raise RuntimeError(f"proxy did not start: {line!r}")
        proxy.port = int(line.split()[1])
        return proxy

    async def cut(self) -> None:
        await self._command("cut")

    async def restore(self) -> None:
        await self._command("restore")

    async def close(self) -> None:
        stdin = self._process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await self._process.wait()
        except TimeoutError:
            self._process.kill()
            await self._process.wait()

    async def _command(self, command: str) -> None:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(f"{command}\n".encode())
        await stdin.drain()
        answer = await self._read_line()
        expected = {"cut": "cut", "restore": "restored"}[command]
        if answer != expected:
            raise RuntimeError(f"proxy answered {answer!r} to {command!r}")

    async def _read_line(self) -> str:
        stdout = self._process.stdout
        assert stdout is not None
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            return (await stdout.readline()).decode().strip()


async def _serve(target_host: str, target_port: int) -> None:
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    print(f"port {proxy.port}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            if line == "cut":
                await proxy.cut()
                print("cut", flush=True)
            elif line == "restore":
                await proxy.restore()
                print("restored", flush=True)
            else:
                print(f"unknown command {line!r}", flush=True)
    finally:
        await proxy.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("target_host")
    parser.add_argument("target_port", type=int)
    args = parser.parse_args()
    asyncio.run(_serve(args.target_host, args.target_port))


if __name__ == "__main__":
    main()
