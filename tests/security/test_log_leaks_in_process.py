"""A logged exception prints no secret and no customer data, whatever its frames hold.

The service's own logging configuration (`configure_logging`, both formats) renders to a captured
stderr; `structlog.testing.capture_logs` would not do, as it bypasses the renderers, and the
renderers are where tracebacks (and any local variables in them) become text.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import structlog

from service.devtools.sender import encode_event
from service.logs import configure_logging
from service.settings import Settings
from tests.support import flows
from tests.support.leaks import assert_no_leaks, redact

FORCED_MESSAGE = "forced by the leak test"


def fail_while_holding(settings: Settings, event: dict[str, Any], body: bytes) -> None:
    """Log an exception from a frame whose local variables are the settings and an event."""
    try:
        raise RuntimeError(FORCED_MESSAGE)
    except RuntimeError:
        structlog.get_logger("tests.security").exception("leak_test.structlog")
        logging.getLogger("tests.security").exception("leak_test.stdlib")


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["json", "console"])
def test_logged_exception_prints_no_canary(
    log_format: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception logged through structlog and through the standard library, from a frame
    holding the settings and an event naming the customer, renders its traceback without a
    secret, a password or customer data."""
    configure_logging(log_format=log_format, level="INFO")
    event = flows.event(flows.new_clock(), "payment_intent.succeeded", "order-leak")

    fail_while_holding(settings, event, encode_event(event))

    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert_no_leaks(output, f"stderr ({log_format} logs)")
    for logged in ("leak_test.structlog", "leak_test.stdlib"):
        assert logged in output, redact(output)
    assert output.count(FORCED_MESSAGE) == 2, redact(output)
