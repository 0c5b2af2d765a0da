"""structlog configuration: JSON lines (or console), with aiohttp's and arq's stdlib loggers routed
through the same pipeline.

Log keys shared by the whole service: `event_id`, `event_type`, `order_id`, `attempt`, `outcome`,
`status`, `duration_ms`, `reason`. Never log secrets, signature headers or whole payloads.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import logging.config
import sys
import threading
import time
from typing import Any, ClassVar, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import Processor

# Keys whose values must never reach a log line, whoever logs them.
_REDACTED_KEYS = frozenset(
    {"secret", "secrets", "signature", "wooshpay_signature", "body", "payload"}
)


def redact(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """Replace values under sensitive keys, as a last line of defence."""
    for key in _REDACTED_KEYS.intersection(event_dict):
        event_dict[key] = "[redacted]"
    return event_dict


# Tracebacks as data, without local variables: a frame's locals hold settings, request bodies
# and customer data (structlog's default `dict_tracebacks` prints them all). The console format
# uses the plain traceback formatter for the same reason (rich's and better-exceptions' show
# locals). Secrets are also masked by their own type (service.secrets); this keeps payloads out.
TRACEBACKS_WITHOUT_LOCALS: Processor = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def _native_processors() -> list[Processor]:
    """The same fields as `_shared_processors` for structlog's own lines, which carry no stdlib
    LogRecord (so no `extra` to add)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        add_timestamp,
        redact,
        structlog.processors.StackInfoRenderer(),
    ]


class _SecondPrefix:
    """The formatted date and time of the current second, reused by every line in it."""

    second = -1
    text = ""


def add_timestamp(
    _: Any, __: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """`timestamp` in ISO 8601 UTC with microseconds, as TimeStamper(fmt="iso", utc=True) writes
    it, but with the date and time formatted once per second: every request logs a line, and
    every line of one second shares that text."""
    now = time.time()
    second = int(now)
    if second != _SecondPrefix.second:
        _SecondPrefix.text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _SecondPrefix.second = second
    event_dict["timestamp"] = f"{_SecondPrefix.text}.{int((now - second) * 1e6):06d}Z"
    return event_dict


class _Output:
    """Where rendered lines go: the stream chosen by the last configure_logging call (the same one
    the stdlib handler writes to), looked up per write so that reconfiguring redirects loggers
    structlog has already cached.

    Inside an event loop, the lines logged during one turn of the loop are written together at
    the start of the next turn: one write instead of one per line (each is a system call, and
    the ingress logs a line per request). A line therefore reaches the stream within one loop
    turn; outside a loop, and at exit, lines are written at once.
    """

    stream: TextIO = sys.stderr
    pending: ClassVar[list[str]] = []
    # Lines may come from more than one thread (each with its own loop, or none).
    lock: ClassVar[threading.Lock] = threading.Lock()
    flush_scheduled_on: asyncio.AbstractEventLoop | None = None


def flush_log_lines() -> None:
    """Write the lines waiting for the end of the current loop turn."""
    with _Output.lock:
        _Output.flush_scheduled_on = None
        if not _Output.pending:
            return
        text = "".join(_Output.pending)
        _Output.pending.clear()
        stream = _Output.stream
        stream.write(text)
        stream.flush()


atexit.register(flush_log_lines)


class _LineLogger:
    """structlog's final logger: queues one rendered line. `name` feeds `add_logger_name`."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with _Output.lock:
            _Output.pending.append(message + "\n")
            if loop is None or _Output.flush_scheduled_on is loop:
                schedule = False
            else:
                _Output.flush_scheduled_on = loop
                schedule = True
        if loop is None:
            flush_log_lines()
        elif schedule:
            loop.call_soon(flush_log_lines)

    debug = info = warning = error = critical = exception = msg


def _line_logger(*args: Any) -> _LineLogger:
    return _LineLogger(str(args[0]) if args else "")


def _json_fallback(value: Any) -> Any:
    """What structlog's JSONRenderer does with a value JSON cannot hold."""
    render = getattr(value, "__structlog__", None)
    return render() if callable(render) else repr(value)


# For what orjson refuses (integers past 64 bits, keys that are not strings): a log call must
# never fail on a value.
_JSON_ENCODER = json.JSONEncoder(default=_json_fallback)


def _render_json(event_dict: structlog.typing.EventDict, **_: Any) -> str:
    # orjson renders a line in a fifth of the standard library's time.
    try:
        return orjson.dumps(event_dict, default=_json_fallback).decode()
    except orjson.JSONEncodeError:
        return _JSON_ENCODER.encode(event_dict)


class HttpParseErrorFilter(logging.Filter):
    """aiohttp logs a malformed request with a traceback that quotes the raw bytes it could not
    parse (for some requests, the whole body). Keep the fact, drop the payload, and log it as a
    warning: anyone on the internet can send one, so it must neither leak data nor flood."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (HttpProcessingError, ConnectionResetError)):
            record.msg = f"{record.getMessage()}: {type(error).__name__}"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def configure_logging(*, log_format: str = "json", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger once, at program start.

    structlog's own lines (the service's, one per request or job on the hot paths) are rendered
    straight to the stream: no stdlib Logger, LogRecord, caller lookup or ProcessorFormatter,
    work these lines do not need and that would outweigh the rendering itself. aiohttp's and
    arq's stdlib lines go through the stdlib handler with a ProcessorFormatter; both produce the
    same JSON objects.
    """
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
        if log_format == "console"
        else structlog.processors.JSONRenderer(serializer=_render_json)
    )
    tracebacks: list[Processor] = [] if log_format == "console" else [TRACEBACKS_WITHOUT_LOCALS]
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "foreign_pre_chain": _shared_processors(),
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        *tracebacks,
                        renderer,
                    ],
                }
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "stream": "ext://sys.stderr",
                    "formatter": "structured",
                }
            },
            "root": {"handlers": ["stderr"], "level": level},
            # Our canonical request line replaces aiohttp's access log.
            "filters": {"http_parse_errors": {"()": HttpParseErrorFilter}},
            "loggers": {
                "aiohttp.access": {"level": "WARNING"},
                "aiohttp.server": {"filters": ["http_parse_errors"]},
            },
        }
    )
    flush_log_lines()
    _Output.stream = sys.stderr
    structlog.configure(
        processors=[*_native_processors(), *tracebacks, renderer],
        logger_factory=_line_logger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        cache_logger_on_first_use=True,
    )
