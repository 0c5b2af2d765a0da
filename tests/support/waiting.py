"""Waiting on conditions with deadlines: tests never sleep and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def eventually(
    condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0, interval_s: float = 0.05
) -> None:
    """Await `condition` until it is true; fail the test when the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(interval_s)  # poll interval of a deadline-bounded wait
    if not await condition():
        raise AssertionError(f"condition not met within {timeout_s} s")


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
    """Synchronous `eventually`, for subprocess-driven tests."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)  # poll interval of a deadline-bounded wait
    if not condition():
        raise AssertionError(f"condition not met within {timeout_s} s")
