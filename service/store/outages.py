"""What "the order store is unavailable" means: one classification for the whole service.

An outage is a failure of the store, not of this program: the server is unreachable, starting
up, shutting down or in recovery; it ended our session or refused another one; it is out of
resources; a lock or a timeout kept it from answering in time. Retrying later is the remedy, so
the worker retries quietly, the ingress answers 503 and the sweeper skips a round. Everything
else (syntax errors, unexpected constraint violations, programming errors) is a bug and must be
seen with its traceback.

Drivers report outages in their own types (asyncpg's `CannotConnectNowError` raised while
connecting is neither a SQLAlchemy error nor an OSError), and SQLAlchemy wraps most of them in a
plain `DBAPIError`. The engine (`service.store.engine`) therefore raises every outage, wherever
it happens, as one of `STORE_OUTAGE_ERRORS`, using `is_store_outage` to decide; callers write
`except STORE_OUTAGE_ERRORS`.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from typing import Final

from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

# What the engine raises for an outage. OperationalError is PEP 249's class for "errors related
# to the database's operation and not necessarily under the control of the programmer"; SQLite's
# driver raises it for a locked or busy database. PoolTimeoutError: every pooled connection is
# busy (the store is slow to answer). OSError covers refused and reset connections.
STORE_OUTAGE_ERRORS: Final = (
    OperationalError,
    DisconnectionError,
    PoolTimeoutError,
    OSError,
    TimeoutError,
)

# SQLSTATE classes and codes meaning "not now" rather than "never".
_OUTAGE_SQLSTATE_CLASSES: Final = frozenset(
    {
        "08",  # connection exception (except 08P01, below)
        "53",  # insufficient resources: disk full, out of memory, too many connections (53300)
        "57",  # operator intervention: 57P01 admin shutdown, 57P02 crash shutdown,
        #        57P03 cannot connect now (starting up, shutting down, in recovery),
        #        57014 query canceled (statement_timeout)
    }
)
_OUTAGE_SQLSTATES: Final = frozenset(
    {
        "40001",  # serialization failure
        "40003",  # statement completion unknown (the connection broke during COMMIT)
        "40P01",  # deadlock detected
        "55P03",  # lock not available (lock_timeout)
        "25006",  # read-only transaction: a standby not yet promoted after a failover
        "58000",  # system error (e.g. the server could not fork a backend)
        "58030",  # I/O error on the server
    }
)
# A protocol violation is the client's bug (e.g. a wrong number of bind parameters).
_NOT_OUTAGE_SQLSTATES: Final = frozenset({"08P01"})

# PostgreSQL's wording, for errors that arrive without their SQLSTATE (relayed by a proxy or a
# pooler); the SQLSTATE decides whenever there is one.
_OUTAGE_MESSAGES: Final = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "the database system is in recovery mode",
    "terminating connection due to administrator command",
    "sorry, too many clients already",
)
# asyncpg's InterfaceError is also raised for misuse ("another operation is in progress");
# only a closed connection is an outage.
_CLOSED_CONNECTION_MESSAGES: Final = ("connection is closed", "connection was closed")
# How deep to follow `orig` / `__cause__`: drivers and SQLAlchemy nest three or four levels.
_MAX_CHAIN: Final = 8


def is_store_outage(error: BaseException) -> bool:
    """True when `error`, raw from the driver or wrapped by SQLAlchemy, says the store is
    unavailable for now; False for bugs."""
    return any(_is_outage_itself(link) for link in error_chain(error))


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """The error, then what it wraps: SQLAlchemy's `orig`, then explicit causes (`raise ...
    from`). Implicit context is not followed: a bug raised while handling an outage is a bug."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(link))
        yield link
        orig = link.orig if isinstance(link, DBAPIError) else None
        link = orig if isinstance(orig, BaseException) else link.__cause__


def _is_outage_itself(error: BaseException) -> bool:
    if isinstance(error, (*STORE_OUTAGE_ERRORS, sqlite3.OperationalError)):
        return True
    if isinstance(error, DBAPIError):
        # SQLAlchemy's dialect recognised a dead connection.
        return error.connection_invalidated
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        return _is_outage_sqlstate(sqlstate)
    message = str(error)
    if _is_asyncpg_interface_error(error):
        return any(fragment in message for fragment in _CLOSED_CONNECTION_MESSAGES)
    return any(fragment in message for fragment in _OUTAGE_MESSAGES)


def _is_asyncpg_interface_error(error: BaseException) -> bool:
    # Looked up, not imported: asyncpg takes 0.1 s to import, and a process that never loaded
    # it (SQLite, the CLI) cannot be holding one of its errors.
    asyncpg = sys.modules.get("asyncpg")
    return asyncpg is not None and isinstance(error, asyncpg.exceptions.InterfaceError)


def _is_outage_sqlstate(sqlstate: str) -> bool:
    if sqlstate in _NOT_OUTAGE_SQLSTATES:
        return False
    return sqlstate in _OUTAGE_SQLSTATES or sqlstate[:2] in _OUTAGE_SQLSTATE_CLASSES


def as_store_outage(error: BaseException, statement: str | None = None) -> OperationalError | None:
    """The OperationalError to raise for `error` when it is an outage not already reported as
    one of STORE_OUTAGE_ERRORS; None otherwise (raise the error as it is)."""
    if isinstance(error, STORE_OUTAGE_ERRORS) or not is_store_outage(error):
        return None
    if isinstance(error, DBAPIError):
        return OperationalError(
            error.statement,
            error.params,
            error.orig or error,
            hide_parameters=error.hide_parameters,
            connection_invalidated=error.connection_invalidated,
        )
    return OperationalError(statement, None, error, hide_parameters=True)
