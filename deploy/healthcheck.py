"""Container health check: exit 0 when `/healthz` answers 200 on one of the given ports.

The image runs every role (`serve` on 8080, `worker` with its metrics server on 9101), so by
default both ports are tried: a role's own port answers, the other one is closed. The image has
no curl; this uses only the standard library. Usage: healthcheck.py [PORT ...]
"""

from __future__ import annotations

import sys
import urllib.request

DEFAULT_PORTS = (8080, 9101)
TIMEOUT_S = 3.0


def healthy(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return bool(response.status == 200)
    except OSError:
        # Refused (not this role's port), 503 (a stuck worker) or a timeout: not healthy here.
        return False


def main(argv: list[str]) -> int:
    ports = [int(arg) for arg in argv] or list(DEFAULT_PORTS)
    return 0 if any(healthy(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
