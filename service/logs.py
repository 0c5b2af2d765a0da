"""structlog configuration: JSON lines (or console), with aiohttp's and arq's stdlib loggers routed
through the same pipeline.

Log keys shared by the whole service: `event_id`, `event_type`, `order_id`, `attempt`, `outcome`,
`status`, `duration_ms`, `reason`. Never log secrets, signature headers or whole payloads.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any

import structlog
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


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]


def configure_logging(*, log_format: str = "json", level: str = "INFO") -> None:
    """Configure structlog and the stdlib root logger once, at program start."""
    shared = _shared_processors()
    renderer: Processor = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format != "console":
        final.append(structlog.processors.dict_tracebacks)
    final.append(renderer)
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "foreign_pre_chain": shared,
                    "processors": final,
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
            "loggers": {"aiohttp.access": {"level": "WARNING"}},
        }
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
