"""Unit tests for service.logs: one JSON pipeline for structlog and stdlib loggers, redacted."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog

from service.logs import configure_logging
from tests.support.logging_state import logging_restored

SECRET = "whsec_must_never_be_logged"
SIGNATURE = "t=1754477408,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd"
BODY = '{"id":"evt_secret_body","data":{"object":{"card":"4242"}}}'


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back so other tests are unaffected."""
    with logging_restored():
        yield


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line of `text`, each of which must be one JSON object."""
    documents = []
    for line in text.splitlines():
        if not line.strip():
            continue
        document = json.loads(line)
        assert isinstance(document, dict), line
        documents.append(document)
    return documents


def _one_line(text: str, event: str) -> dict[str, Any]:
    matches = [document for document in _json_lines(text) if document.get("event") == event]
    assert len(matches) == 1, f"expected one {event!r} line in:\n{text}"
    return matches[0]


def _assert_recent_utc_timestamp(value: object) -> None:
    assert isinstance(value, str)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert moment.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)


def test_structlog_line_is_json_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """A structlog line is one JSON object on stderr: event, level, logger, timestamp, fields."""
    configure_logging(log_format="json", level="INFO")
    structlog.get_logger("service.test").info("order.updated", order_id="o1", attempt=2)

    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_line(captured.err, "order.updated")
    assert line["level"] == "info"
    assert line["logger"] == "service.test"
    assert line["order_id"] == "o1"
    assert line["attempt"] == 2
    _assert_recent_utc_timestamp(line["timestamp"])


@pytest.mark.parametrize("name", ["aiohttp.server", "arq.worker"])
def test_stdlib_lines_go_through_the_same_json_pipeline(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """aiohttp's and arq's stdlib loggers come out as the same JSON objects as structlog's."""
    configure_logging(log_format="json", level="INFO")
    logging.getLogger(name).warning("job %s took %d ms", "abc", 12)

    line = _one_line(capsys.readouterr().err, "job abc took 12 ms")
    assert line["level"] == "warning"
    assert line["logger"] == name
    _assert_recent_utc_timestamp(line["timestamp"])


def test_exceptions_stay_inside_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A logged exception is structured inside its JSON object, not spilled as raw lines."""
    configure_logging(log_format="json", level="INFO")
    try:
        raise RuntimeError("database went away")
    except RuntimeError:
        structlog.get_logger("service.test").exception("store.failed")
        logging.getLogger("aiohttp.server").exception("Error handling request")

    err = capsys.readouterr().err
    structured = _one_line(err, "store.failed")
    foreign = _one_line(err, "Error handling request")
    for line in (structured, foreign):
        assert line["level"] == "error"
        assert "RuntimeError" in json.dumps(line["exception"])


def test_level_filters_both_kinds_of_logger(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines below the configured level are dropped, from structlog and stdlib alike."""
    configure_logging(log_format="json", level="WARNING")
    structlog.get_logger("service.test").info("quiet.structlog")
    logging.getLogger("arq.worker").info("quiet stdlib")
    structlog.get_logger("service.test").warning("loud.structlog")
    logging.getLogger("arq.worker").error("loud stdlib")

    events = [line["event"] for line in _json_lines(capsys.readouterr().err)]
    assert events == ["loud.structlog", "loud stdlib"]


def test_aiohttp_access_log_is_silenced(capsys: pytest.CaptureFixture[str]) -> None:
    """aiohttp's own access log is replaced by the service's request line, so INFO is dropped."""
    configure_logging(log_format="json", level="INFO")
    logging.getLogger("aiohttp.access").info("127.0.0.1 GET /healthz 200")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("secret", SECRET),
        ("secrets", SECRET),
        ("signature", SIGNATURE),
        ("wooshpay_signature", SIGNATURE),
        ("body", BODY),
        ("payload", BODY),
    ],
)
def test_sensitive_keys_are_redacted_from_structlog(
    key: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Values under secret/signature/body/payload keys never reach a structlog line."""
    configure_logging(log_format="json", level="INFO")
    structlog.get_logger("service.test").info("request.rejected", **{key: value}, reason="x")

    err = capsys.readouterr().err
    line = _one_line(err, "request.rejected")
    assert line[key] == "[redacted]"
    assert line["reason"] == "x"
    assert value not in err


def test_sensitive_keys_are_redacted_from_stdlib_extra(capsys: pytest.CaptureFixture[str]) -> None:
    """Sensitive values passed as stdlib `extra` fields are redacted too."""
    configure_logging(log_format="json", level="INFO")
    logging.getLogger("aiohttp.server").info(
        "odd request", extra={"secret": SECRET, "signature": SIGNATURE, "payload": BODY}
    )

    err = capsys.readouterr().err
    line = _one_line(err, "odd request")
    assert (line["secret"], line["signature"], line["payload"]) == ("[redacted]",) * 3
    for value in (SECRET, SIGNATURE, BODY):
        assert value not in err


def test_console_format_renders_readable_text(capsys: pytest.CaptureFixture[str]) -> None:
    """LOG_FORMAT=console prints human-readable, uncoloured text (not JSON), still redacted."""
    configure_logging(log_format="console", level="INFO")
    structlog.get_logger("service.test").info("order.updated", order_id="o1", secret=SECRET)
    logging.getLogger("arq.worker").info("worker started")

    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 2
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)
        assert "\x1b[" not in line, "no colour codes when stderr is not a terminal"
    assert "order.updated" in lines[0]
    assert "order_id=o1" in lines[0]
    assert SECRET not in lines[0]
    assert "worker started" in lines[1]


def test_configuring_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Calling configure_logging again replaces the handler rather than adding a second one."""
    configure_logging(log_format="json", level="INFO")
    configure_logging(log_format="json", level="INFO")
    structlog.get_logger("service.test").info("once")
    logging.getLogger("arq.worker").info("once too")

    events = [line["event"] for line in _json_lines(capsys.readouterr().err)]
    assert events == ["once", "once too"]


def test_lines_of_one_loop_turn_are_written_together_and_in_order(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Inside an event loop a line is written at the start of the next loop turn, with every
    other line of its turn (one write), in the order they were logged."""
    configure_logging(log_format="json", level="INFO")
    log = structlog.get_logger("service.test")

    async def log_three() -> str:
        for index in range(3):
            log.info("turn.line", n=index)
        written_in_the_turn = capsys.readouterr().err
        await asyncio.sleep(0)
        return written_in_the_turn

    assert asyncio.run(log_three()) == ""
    lines = [line for line in _json_lines(capsys.readouterr().err) if line["event"] == "turn.line"]
    assert [line["n"] for line in lines] == [0, 1, 2]


def test_a_line_logged_outside_a_loop_is_written_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A thread without an event loop (or a command before its loop starts) writes at once,
    after any lines a loop left waiting."""
    configure_logging(log_format="json", level="INFO")
    log = structlog.get_logger("service.test")
    thread = threading.Thread(target=lambda: log.info("thread.line"))
    thread.start()
    thread.join()
    assert _one_line(capsys.readouterr().err, "thread.line")["logger"] == "service.test"


def _fail_with_sensitive_locals() -> None:
    """Raise from a frame whose locals hold a secret and a customer's data."""
    webhook_secret = SECRET  # noqa: F841 - a local variable the traceback must not show
    body = BODY  # noqa: F841 - likewise
    raise RuntimeError("apply failed")


@pytest.mark.parametrize("log_format", ["json", "console"])
@pytest.mark.parametrize("logger_kind", ["structlog", "stdlib"])
def test_tracebacks_show_no_local_variables(
    log_format: str, logger_kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exception logged with its traceback, by structlog or a stdlib logger (arq, aiohttp), in
    either format, names the frames but never prints their local variables."""
    configure_logging(log_format=log_format, level="INFO")
    try:
        _fail_with_sensitive_locals()
    except RuntimeError:
        if logger_kind == "structlog":
            structlog.get_logger("service.test").exception("job.error")
        else:
            logging.getLogger("arq.worker").exception("job failed")
    err = capsys.readouterr().err
    assert "_fail_with_sensitive_locals" in err, "the traceback itself is kept"
    assert "apply failed" in err
    assert SECRET not in err
    assert "evt_secret_body" not in err
