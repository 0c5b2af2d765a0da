"""The ingest baseline: a bare aiohttp handler that reads the body and answers a JSON 200, the
least any aiohttp ingress can do per request. Run as `python -m tests.bench.bare_app PORT`."""

from __future__ import annotations

import sys

from aiohttp import web


async def receive(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"received": True, "event_id": "evt_bare", "duplicate": False})


def main() -> None:
    port = int(sys.argv[1])
    app = web.Application()
    app.router.add_post("/webhooks/wooshpay", receive)
    app.router.add_get("/healthz", healthz)
    # reuse_port: two baseline processes share the port like `serve --workers 2`.
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=True)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    main()
