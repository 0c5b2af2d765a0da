"""A TCP proxy for outage tests: the real server stays up, only the proxy's path goes away.

`cut()` closes the listener and every live connection, so clients see their connections drop and
new ones refused, as when the database host goes down; `restore()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Final

from sqlalchemy.engine import make_url

LOOPBACK: Final = "127.0.0.1"
CHUNK_BYTES: Final = 64 * 1024


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; `cut()` and `restore()` simulate an outage."""

    def __init__(self, target_host: str = LOOPBACK, target_port: int = 5432) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = _free_port()
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None

    def url_for(self, database_url: str) -> str:
        """`database_url` with its host and port pointed at this proxy."""
        url = make_url(database_url).set(host=LOOPBACK, port=self.port)
        return url.render_as_string(hide_password=False)

    async def start(self) -> None:
        """Listen on `self.port` (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, LOOPBACK, self.port, reuse_address=True
            )

    async def restore(self) -> None:
        """Accept connections again after a `cut()`, on the same port."""
        await self.start()

    async def cut(self) -> None:
        """Stop listening and drop every live connection, both directions."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()

    async def close(self) -> None:
        await self.cut()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        self.connections_accepted += 1
        self._writers.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.target_host, self.target_port
            )
        except OSError:
            self._writers.discard(client_writer)
            client_writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        pumps = [
            asyncio.create_task(self._pump(client_reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, client_writer)),
        ]
        self._tasks.update(pumps)
        try:
            # When either side closes, close both: a half-open database link helps nobody.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
                self._tasks.discard(pump)
            for writer in (client_writer, upstream_writer):
                self._writers.discard(writer)
                writer.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
