"""Holding an SQLite database's write lock from another connection, as a second process would."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url


def sqlite_path(url: str) -> Path:
    """The file of an `sqlite:///...` URL."""
    database = make_url(url).database
    assert database is not None
    return Path(database)


@contextlib.contextmanager
def write_locked(database_url: str) -> Iterator[None]:
    """Another connection holds the database's write lock (BEGIN IMMEDIATE) until the block
    ends."""
    holder = sqlite3.connect(sqlite_path(database_url), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
        holder.execute("ROLLBACK")
    finally:
        holder.close()
