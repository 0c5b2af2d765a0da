"""Creating the async engine for the configured order store: URL mapping, pool options, idle
pings, SQLite's pragmas and transaction locking, and store outages raised as such.

The hot paths run their statements on the pooled connections' drivers instead
(service.store.driver).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.store.outages import as_store_outage
from service.timeouts import (
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_POOL_TIMEOUT_S,
    PING_IDLE_AFTER_S,
    SQLITE_BUSY_TIMEOUT_MS,
    STATEMENT_TIMEOUT_MS,
)

# Execution option marking connections that only read (see `reading`).
READS_ONLY = "store_reads_only"


def async_url(database_url: str) -> str:
    """Map the documented `postgresql://` / `sqlite:///` URLs to their async drivers."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "postgresql" or url.drivername == "postgres":
        url = url.set(drivername="postgresql+asyncpg")
    elif backend == "sqlite":
        url = url.set(drivername="sqlite+aiosqlite")
    else:
        raise ValueError(f"unsupported database backend: {backend}")
    return url.render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def reading(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (pool, events, settings) for statements that only read.

    On SQLite its transactions begin deferred, so a health probe, a metrics scrape or a listing
    reads a snapshot (WAL) while a writer holds the write lock, instead of queueing for that lock
    up to the busy timeout. Never write through it: a deferred transaction that reads then writes
    can fail with "database is locked" (see _configure_sqlite). No effect on PostgreSQL.
    """
    return engine.execution_options(**{READS_ONLY: True})


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    """An engine whose transactions are safe for read-check-write on either backend."""
    url = async_url(database_url)
    if url.startswith("sqlite"):
        # hide_parameters: a database error's message must not quote event bodies into logs.
        engine = create_async_engine(url, hide_parameters=True)
        _configure_sqlite(engine)
        _report_outages(engine)
        return engine
    engine = create_async_engine(
        url,
        hide_parameters=True,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=DATABASE_POOL_TIMEOUT_S,
        # Fail fast when the database is unreachable, so the ingress answers 503 promptly.
        # Statements are bounded by the server (statement_timeout), not by asyncpg's
        # command_timeout: that would arm and cancel a client-side timer around every query, on
        # paths that run several per event. Callers bound their own waits for a dead network
        # (the ingress batch timeout, arq's job timeout, the sweeper's round timeout).
        connect_args={
            "timeout": DATABASE_CONNECT_TIMEOUT_S,
            "server_settings": {"statement_timeout": str(STATEMENT_TIMEOUT_MS)},
        },
    )
    _ping_idle_connections(engine)
    _report_outages(engine)
    return engine


def _report_outages(engine: AsyncEngine) -> None:
    """Raise every store outage met by SQLAlchemy as one of STORE_OUTAGE_ERRORS.

    SQLAlchemy wraps most driver errors in a plain DBAPIError: a server starting up, shutting
    down or ending our session (SQLSTATE 57P0x) comes out as that, like a syntax error. This
    hook re-raises outages as OperationalError, with the same statement and original error;
    connections that SQLAlchemy found dead are still discarded. The driver-level paths
    (service.store.driver) raise theirs the same way.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        return as_store_outage(context.sqlalchemy_exception or context.original_exception)


def _ping_idle_connections(engine: AsyncEngine) -> None:
    """Check a pooled connection before use only when it sat idle for a while.

    That is when a connection may have died unseen (a database restart, a firewall dropping
    idle TCP connections). pool_pre_ping would check every checkout, and asyncpg's ping is three
    round trips (BEGIN, a query, ROLLBACK): more than the ingress's whole batch insert. A
    connection that dies while in use raises a disconnect error, on which SQLAlchemy discards it
    and every connection pooled before it.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError(str(error)) from error


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see _on_begin).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # A transaction writes unless its connection is marked as only reading (`reading`): an
        # unmarked read merely queues for the lock, where an unmarked write could fail midway.
        if connection.get_execution_options().get(READS_ONLY, False):
            # Deferred: reads a snapshot without taking the write lock.
            connection.exec_driver_sql("BEGIN")
        else:
            # BEGIN IMMEDIATE takes the write lock up front: SQLite has no SELECT ... FOR UPDATE,
            # and a deferred transaction that reads then writes can fail with "database is
            # locked".
            connection.exec_driver_sql("BEGIN IMMEDIATE")
