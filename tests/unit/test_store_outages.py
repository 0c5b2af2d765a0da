"""The store-outage classification: what says "the store is unavailable for now", raw from a
driver or wrapped by SQLAlchemy, and what is a bug. The errors are the drivers' own classes; the
servers' real answers are exercised in tests/integration/test_store_outages.py."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InvalidRequestError,
    OperationalError,
    ProgrammingError,
    ResourceClosedError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from service.store.outages import STORE_OUTAGE_ERRORS, as_store_outage, is_store_outage

pg = asyncpg.exceptions


def caused(error: BaseException, cause: BaseException) -> BaseException:
    """`error` as if raised `from cause`."""
    error.__cause__ = cause
    return error


def wrapped(orig: BaseException) -> DBAPIError:
    """`orig` as SQLAlchemy reports a driver error it has no better class for."""
    return DBAPIError("SELECT 1", None, orig)


def during(error: BaseException, handled: BaseException) -> BaseException:
    """`error` as if raised while handling `handled` (implicit context, no explicit cause)."""
    error.__context__ = handled
    return error


OUTAGES = {
    "starting up (57P03)": pg.CannotConnectNowError("the database system is starting up"),
    "shutting down, wrapped": wrapped(
        pg.CannotConnectNowError("the database system is shutting down")
    ),
    "adapter error caused by 57P03": caused(
        RuntimeError("the server said no"), pg.CannotConnectNowError("in recovery")
    ),
    "admin shutdown (57P01)": pg.AdminShutdownError("terminating connection"),
    "crash shutdown (57P02)": pg.CrashShutdownError("terminating connection"),
    "connection gone, caused by 57P01": wrapped(
        caused(
            pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
            pg.AdminShutdownError("terminating connection due to administrator command"),
        )
    ),
    "too many connections (53300)": pg.TooManyConnectionsError("sorry, too many clients"),
    "statement timeout (57014)": wrapped(pg.QueryCanceledError("canceling statement")),
    "deadlock (40P01)": wrapped(pg.DeadlockDetectedError("deadlock detected")),
    "serialization failure (40001)": pg.SerializationError("could not serialize access"),
    "lock timeout (55P03)": pg.LockNotAvailableError("could not obtain lock"),
    "closed connection": pg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
    "closed connection, wrapped": wrapped(pg.InterfaceError("connection is closed")),
    "refused": ConnectionRefusedError(111, "Connect call failed"),
    "reset": ConnectionResetError(104, "Connection reset by peer"),
    "network unreachable": OSError(101, "Network is unreachable"),
    "timeout": TimeoutError(),
    "operational error": OperationalError("SELECT 1", None, sqlite3.OperationalError("I/O")),
    "disconnection": DisconnectionError("connection invalidated"),
    "pool exhausted": PoolTimeoutError("QueuePool limit reached"),
    "invalidated connection": DBAPIError(
        "SELECT 1", None, ValueError("lost"), connection_invalidated=True
    ),
    "sqlite locked": sqlite3.OperationalError("database is locked"),
    "sqlite table locked": sqlite3.OperationalError("database table is locked"),
    "sqlite locked, wrapped": wrapped(sqlite3.OperationalError("database is locked")),
    "message without SQLSTATE": Exception("FATAL: the database system is starting up"),
}

BUGS = {
    "syntax error (42601)": pg.PostgresSyntaxError('syntax error at or near "SELEC"'),
    "syntax error, wrapped": ProgrammingError(
        "SELEC 1", None, pg.PostgresSyntaxError("syntax error")
    ),
    "unexpected duplicate (23505)": IntegrityError(
        "INSERT", None, pg.UniqueViolationError("duplicate key value")
    ),
    "missing table (42P01)": wrapped(pg.UndefinedTableError('relation "events" does not exist')),
    "wrong password (28P01)": pg.InvalidPasswordError("password authentication failed"),
    "protocol violation (08P01)": wrapped(pg.ProtocolViolationError("bind message supplies 1")),
    "concurrent use of a connection": pg.InterfaceError(
        "cannot perform operation: another operation is in progress"
    ),
    "sqlite constraint": sqlite3.IntegrityError("UNIQUE constraint failed: events.event_id"),
    "sqlite misuse": sqlite3.ProgrammingError("Cannot operate on a closed cursor."),
    "misuse of SQLAlchemy": InvalidRequestError("This transaction is inactive"),
    "closed result": ResourceClosedError("This result object is closed."),
    "plain bug": KeyError("order_id"),
    "bug while handling an outage": during(
        ValueError("bad value"), pg.CannotConnectNowError("starting up")
    ),
}


@pytest.mark.parametrize("error", OUTAGES.values(), ids=OUTAGES.keys())
def test_outages_are_recognised(error: BaseException) -> None:
    """Server starts, stops and session ends, refused or reset connections, timeouts, locks and
    exhausted resources are outages, raw or wrapped."""
    assert is_store_outage(error)


@pytest.mark.parametrize("error", BUGS.values(), ids=BUGS.keys())
def test_bugs_are_not_outages(error: BaseException) -> None:
    """Syntax errors, unexpected constraint violations, misuse and plain bugs are not outages."""
    assert not is_store_outage(error)


def test_a_cause_cycle_ends() -> None:
    """A cause chain that loops back on itself is walked once, not forever."""
    first, second = ValueError("first"), ValueError("second")
    caused(first, second)
    caused(second, first)
    assert not is_store_outage(first)


def test_an_outage_reported_as_dbapi_error_becomes_an_operational_error() -> None:
    """A DBAPIError wrapping a 57P03 is re-raised as an OperationalError (one of
    STORE_OUTAGE_ERRORS) keeping its statement, original error and invalidation flag."""
    orig = pg.CannotConnectNowError("the database system is starting up")
    error = DBAPIError("SELECT 1", None, orig, connection_invalidated=True)
    outage = as_store_outage(error)
    assert isinstance(outage, OperationalError)
    assert isinstance(outage, STORE_OUTAGE_ERRORS)
    assert (outage.statement, outage.orig, outage.connection_invalidated) == (
        "SELECT 1",
        orig,
        True,
    )


def test_a_raw_driver_outage_becomes_an_operational_error() -> None:
    """A raw driver error that is an outage is wrapped with the statement it interrupted."""
    orig = pg.AdminShutdownError("terminating connection due to administrator command")
    outage = as_store_outage(orig, "COMMIT")
    assert isinstance(outage, OperationalError)
    assert (outage.statement, outage.orig) == ("COMMIT", orig)


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "refused"),
        OperationalError("SELECT 1", None, sqlite3.OperationalError("database is locked")),
        wrapped(pg.PostgresSyntaxError("syntax error")),
        KeyError("order_id"),
    ],
    ids=["already an outage type", "already an OperationalError", "a bug", "a plain bug"],
)
def test_errors_already_reported_right_are_left_alone(error: BaseException) -> None:
    """Outages already of an outage type, and bugs, are raised as they are."""
    assert as_store_outage(error) is None
