"""The command line's access to the order store, and what its errors mean to an operator.

Every command reaches the store through `with_store` (or `in_store`): an error that means the
store cannot serve the command becomes a StoreProblem, one line naming the problem and its fix.
"Not migrated" is `no such table` on SQLite and undefined_table (42P01) on PostgreSQL; an outage
is what `service.store.outages.is_store_outage` says it is.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from service.cli.common import CommandFailed, run, type_name
from service.secrets import SecretUrl
from service.store.engine import create_engine
from service.store.outages import error_chain, is_store_outage

T = TypeVar("T")

MIGRATE_HINT = "run 'wooshpay-webhooks migrate'"
NO_SCHEMA = f"the order store has no schema yet: {MIGRATE_HINT}"
OLD_SCHEMA = f"the order store schema is older than this version: {MIGRATE_HINT}"
# How long a failed command waits, on its way out, for aiosqlite's threads (named after their
# target function).
SQLITE_THREAD_WAIT_S = 1.0
_AIOSQLITE_THREAD = "(_connection_worker_thread)"


class StoreProblem(CommandFailed):
    """The order store cannot serve the command. `outage` when it may pass on its own (the
    database is down or busy); otherwise someone must act (create the database, migrate it)."""

    def __init__(self, message: str, *, outage: bool = False, reason: str = "") -> None:
        super().__init__(message)
        self.outage = outage
        self.reason = reason


def in_store(database_url: SecretUrl, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """`with_store` for a synchronous command."""
    return run(with_store(database_url, work))


async def with_store(database_url: SecretUrl, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run `work` on a short-lived engine for the order store, then release the engine.

    Every command reaches the store through here: an error that means the store cannot serve
    the command (unreachable, no such database, no schema) becomes a StoreProblem naming the
    problem and its fix; any other error propagates unchanged.
    """
    engine = create_engine(database_url.reveal())
    try:
        return await _disposing(engine, work)
    except CommandFailed:
        raise
    except Exception as error:
        if engine.dialect.name == "sqlite":
            await _sqlite_threads_finished()
        problem = describe_store_error(error, database_url)
        if problem is None:
            raise
        raise problem from error


async def _disposing(engine: AsyncEngine, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    try:
        return await work(engine)
    finally:
        await engine.dispose()


async def _sqlite_threads_finished() -> None:
    """Wait (briefly) for aiosqlite's connection threads to end. A failed connect leaves its
    thread one queued stop, whose completion it posts to the event loop: if the command ends
    and closes the loop first, the thread dies printing a traceback."""
    deadline = time.monotonic() + SQLITE_THREAD_WAIT_S
    for thread in threading.enumerate():
        if thread.name.endswith(_AIOSQLITE_THREAD):
            # Joined from another thread, so this loop stays free to take the thread's post.
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))


def describe_store_error(error: BaseException, database_url: SecretUrl) -> StoreProblem | None:
    """The StoreProblem an error from the order store means, or None when it means none of them
    (a bug, to be seen with its type)."""
    chain = list(error_chain(error))
    location = str(database_url)  # the password masked
    for cause in chain:
        problem = _postgres_problem(cause, database_url) or _sqlite_problem(cause, location)
        if problem is not None:
            return problem
    return _outage(chain, location) if is_store_outage(error) else None


def _outage(chain: list[BaseException], location: str) -> StoreProblem:
    """An outage: the store unreachable (the usual case for a command), or unable to answer."""
    for cause in chain:
        reason = _connection_failure(cause)
        if reason is not None:
            running = "is the database running?"
            hint = "check the host in DATABASE_URL" if reason == "host not found" else running
            return StoreProblem(
                f"order store unreachable at {location} ({reason}): {hint}",
                outage=True,
                reason=reason,
            )
    reason = next(
        (_first_line(cause) for cause in chain if _said_by_store(cause)), type_name(chain[-1])
    )
    return StoreProblem(
        f"the order store at {location} could not answer ({reason}): try again",
        outage=True,
        reason=reason,
    )


# PostgreSQL error codes (SQLSTATE) meaning the server is there but will not take us now.
_REFUSING_SQLSTATES = {
    "53300": "too many connections",
    "57P01": "the server is shutting down",
    "57P02": "the server is shutting down",
    "57P03": "the server is starting up or shutting down",
}


def _postgres_problem(cause: BaseException, database_url: SecretUrl) -> StoreProblem | None:
    sqlstate = getattr(cause, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return None
    if sqlstate == "42P01":  # undefined_table
        return StoreProblem(NO_SCHEMA)
    if sqlstate == "42703":  # undefined_column
        return StoreProblem(OLD_SCHEMA)
    if sqlstate == "3D000":  # invalid_catalog_name
        return StoreProblem(
            f'database "{_database_name(database_url)}" does not exist: '
            f"create it, then {MIGRATE_HINT}"
        )
    if sqlstate.startswith("28"):  # invalid authorization: wrong user or password, pg_hba
        return StoreProblem(
            f"the order store at {database_url} refused the login ({_first_line(cause)}): "
            "check the user and password in DATABASE_URL"
        )
    return None


def _sqlite_problem(cause: BaseException, location: str) -> StoreProblem | None:
    if not isinstance(cause, sqlite3.Error):
        return None
    said = str(cause)
    if said.startswith("no such table"):
        return StoreProblem(NO_SCHEMA)
    if said.startswith("no such column"):
        return StoreProblem(OLD_SCHEMA)
    if said == "unable to open database file":
        return StoreProblem(
            f"cannot open the order store at {location} ({said}): "
            "does its directory exist, and may this user write there?"
        )
    if said == "file is not a database":
        return StoreProblem(f"{location} is not an SQLite database: check DATABASE_URL")
    if said == "database is locked":
        return StoreProblem(
            f"the order store at {location} is busy ({said}): another process holds its write "
            "lock; try again",
            outage=True,
            reason=said,
        )
    return None


def _connection_failure(cause: BaseException) -> str | None:
    """Why the store could not be reached (refused, timed out, host unknown), if that is it."""
    if isinstance(cause, socket.gaierror):
        return "host not found"
    if isinstance(cause, TimeoutError | PoolTimeoutError):
        return "timed out"
    if isinstance(cause, OSError):
        return _os_error_reason(cause)
    if isinstance(cause, DBAPIError) and cause.connection_invalidated:
        return "connection lost"
    sqlstate = getattr(cause, "sqlstate", None)
    if not isinstance(sqlstate, str):
        return None
    return _REFUSING_SQLSTATES.get(sqlstate, "connection failure" if sqlstate[:2] == "08" else None)


def _os_error_reason(error: OSError) -> str:
    if error.errno is not None:
        return os.strerror(error.errno).lower()
    # asyncio reports a host with several addresses (localhost: ::1 and 127.0.0.1) as one
    # OSError("Multiple exceptions: [Errno 111] ..., [Errno 111] ...") without an errno.
    codes = set(re.findall(r"\[Errno (\d+)\]", str(error)))
    if len(codes) == 1:
        return os.strerror(int(codes.pop())).lower()
    return "connection failed"


def _said_by_store(cause: BaseException) -> bool:
    """An error in the store's (or SQLite's) own words, without SQLAlchemy's statement dump."""
    return isinstance(cause, sqlite3.Error) or isinstance(getattr(cause, "sqlstate", None), str)


def _first_line(cause: BaseException) -> str:
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type_name(cause)


def _database_name(database_url: SecretUrl) -> str:
    try:
        return make_url(database_url.reveal()).database or ""
    except ArgumentError:
        return ""
