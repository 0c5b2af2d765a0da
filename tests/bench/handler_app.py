"""The ingest ceiling: our ingress with its inbox writer answering at once, touching neither the
order store nor Redis. Next to bare aiohttp it shows what verifying, parsing, the log line and
the metrics cost per request, which no inbox design can win back. Run as
`python -m tests.bench.handler_app PORT` with the service environment."""

from __future__ import annotations

import sys

from aiohttp import web

from service.cli.common import load_settings
from service.ingress import app as http
from service.ingress.inbox_writer import InboxWriter, Recorded
from service.store.inbox import NewEvent


class _RecordsNothing(InboxWriter):
    async def record(self, item: NewEvent) -> Recorded:
        del item
        return Recorded(is_new=True)


def main() -> None:
    port = int(sys.argv[1])
    settings = load_settings(require_secrets=True)
    http.InboxWriter = _RecordsNothing  # type: ignore[attr-defined]  # create_app builds from it
    web.run_app(http.create_app(settings), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
