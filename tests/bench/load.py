"""Load generation: realistic signed events, and wrk driving them at the ingress.

wrk replays pre-signed requests from a data file (`<signature header>\\t<body>` per line); its Lua
`init()` builds the requests with `wrk.format` (at file scope there is no Host header yet, and a
Lua table of that many literals would exceed the 65536-constant limit). Every line carries a new
event id, because a duplicate takes a cheaper path; `t` is the time of writing, so a data file is
written just before its run, well inside the signature tolerance.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from service.devtools.sender import EventOptions, build_event, encode_event
from service.ingress.app import WEBHOOK_PATH
from service.wooshpay.signatures import sign_header

# The life of an order as WooshPay reports it; event i is step i // orders of order i % orders,
# so consecutive events concern different orders (as in production, where one order's events are
# seconds apart) and every order sees its steps in order.
ORDER_FLOW: Final = (
    "payment_intent.created",
    "payment_intent.processing",
    "payment_intent.succeeded",
    "charge.refund.updated",
)
REFUND_AMOUNT: Final = 500

_LUA_INIT: Final = """
local reqs = {}
local i = 0
init = function(args)
  local path, skip = args[1], tonumber(args[2])
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    if n > skip then
      local tab = string.find(line, "\\t", 1, true)
      reqs[#reqs + 1] = wrk.format("POST", "%(path)s",
        {["Content-Type"] = "application/json",
         ["Wooshpay-Signature"] = string.sub(line, 1, tab - 1)},
        string.sub(line, tab + 1))
    end
  end
end
request = function()
  i = i %% #reqs + 1
  return reqs[i]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"socket_errors":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
# Pacing: each connection waits this long (ms, from the script's third argument) between a
# response and its next request; wrk calls delay() only when the script defines it.
_LUA_DELAY: Final = """
local pause = 0
local base_init = init
init = function(args)
  pause = tonumber(args[3])
  base_init(args)
end
delay = function()
  return pause
end
"""


def order_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index}" for index in range(count)]


def event_bodies(count: int, *, orders: Sequence[str], now_ms: int) -> Iterator[bytes]:
    """`count` realistic ~1 KB events (unique ids) spread over `orders` as ORDER_FLOW says."""
    for index in range(count):
        order_id = orders[index % len(orders)]
        event_type = ORDER_FLOW[(index // len(orders)) % len(ORDER_FLOW)]
        options = EventOptions(
            order_id=order_id, refund_id=f"re_{order_id}", refund_amount=REFUND_AMOUNT
        )
        yield encode_event(build_event(event_type, options, now_ms=now_ms))


def write_requests(path: Path, count: int, *, orders: Sequence[str], secret: str) -> None:
    now = int(time.time())
    with path.open("w") as out:
        for body in event_bodies(count, orders=orders, now_ms=now * 1000):
            out.write(f"{sign_header(body, secret, timestamp=now)}\t{body.decode()}\n")


def write_scripts(workdir: Path) -> tuple[Path, Path]:
    """The flat-out and the paced wrk scripts."""
    flat = _LUA_INIT % {"path": WEBHOOK_PATH}
    flat_path, paced_path = workdir / "flat.lua", workdir / "paced.lua"
    flat_path.write_text(flat)
    paced_path.write_text(flat + _LUA_DELAY)
    return flat_path, paced_path


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def succeeded(self) -> int:
        return self.requests - self.status_errors

    @property
    def rate(self) -> float:
        return self.succeeded / self.duration_s if self.duration_s else 0.0


@dataclass(frozen=True)
class Wrk:
    script: Path
    connections: int
    cpu: str | None = "1"

    def run(
        self, url: str, data: Path, *, duration_s: float, skip: int = 0, delay_ms: int = 0
    ) -> WrkResult:
        """One wrk run from line `skip` of the data file; parses the `done()` summary."""
        command = [
            *(["taskset", "-c", self.cpu] if self.cpu is not None else []),
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{round(duration_s)}s",  # wrk takes whole seconds
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            url,
            "--",
            str(data),
            str(skip),
            str(delay_ms),
        ]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=duration_s + 120, check=False
        )
        return _parse(completed)


def _parse(completed: subprocess.CompletedProcess[str]) -> WrkResult:
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH "):
            raw = json.loads(line.removeprefix("BENCH "))
            return WrkResult(
                requests=raw["requests"],
                duration_s=raw["duration_us"] / 1e6,
                status_errors=raw["status_errors"],
                socket_errors=raw["socket_errors"],
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary:\n{completed.stdout}\n{completed.stderr}")
