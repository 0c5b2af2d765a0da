"""Putting back the process-wide logging configuration a test changed.

`configure_logging` (and every CLI command run in-process) reconfigures the stdlib root logger,
the aiohttp loggers it tunes and structlog; tests that call it restore all of it afterwards so
later tests see the configuration they started with.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

# The loggers configure_logging tunes.
TUNED_LOGGERS = ("aiohttp.access", "aiohttp.server")


@contextmanager
def logging_restored() -> Iterator[None]:
    """Run the block, then restore the root handlers and level, the tuned loggers' level,
    propagation and filters, and structlog's configuration."""
    root = logging.getLogger()
    root_handlers, root_level = root.handlers[:], root.level
    tuned = [logging.getLogger(name) for name in TUNED_LOGGERS]
    saved = [(logger.level, logger.propagate, logger.filters[:]) for logger in tuned]
    was_configured = structlog.is_configured()
    config = structlog.get_config()
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in root_handlers:
                handler.close()
        root.handlers[:] = root_handlers
        root.setLevel(root_level)
        for logger, (level, propagate, filters) in zip(tuned, saved, strict=True):
            logger.setLevel(level)
            logger.propagate = propagate
            logger.filters[:] = filters
        if was_configured:
            structlog.configure(**config)
        else:
            structlog.reset_defaults()
