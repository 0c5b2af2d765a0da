"""Creating the async engine for the configured order store, and running the hot
paths' statements on its pooled connections' drivers (see `driver_transaction`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine, ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from service.store.outages import STORE_OUTAGE_ERRORS, as_store_outage

# SQLite waits this long for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The longest a PostgreSQL statement may run (migrations lift it for their own transaction).
STATEMENT_TIMEOUT_MS = 30_000
# A pooled PostgreSQL connection unused for longer than this is pinged before it is used.
PING_IDLE_AFTER_S = 5.0


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
        pool_timeout=10,
        # Fail fast when the database is unreachable, so the ingress answers 503 promptly.
        # Statements are bounded by the server (statement_timeout), not by asyncpg's
        # command_timeout: that arms and cancels a client-side timer on every query, about 20 us
        # of CPU each, and the hot paths run several per event. Callers bound their own waits
        # for a dead network (the ingress batch timeout, arq's job timeout, the sweeper's).
        connect_args={
            "timeout": 5,
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
    connections that SQLAlchemy found dead are still discarded. The driver-level paths below
    do the same in `_raise_as_store_error`.
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
    def _on_begin(connection: Any) -> None:
        # BEGIN IMMEDIATE takes the write lock up front: SQLite has no SELECT ... FOR UPDATE, and
        # a deferred transaction that reads then writes can fail with "database is locked".
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# --- the driver's own connection, for the hot paths ---------------------------------------------
#
# Through SQLAlchemy a statement costs 130-230 us of CPU on top of the driver (statement
# construction, cache keys, execution context, greenlet switches, and four trips to aiosqlite's
# thread where one does); the reconciler runs about ten per event. The hot paths therefore run
# Core statements compiled once per dialect on the pooled connection's driver object. SQLAlchemy
# still owns the pool: checkout, idle pings and discarding broken connections.


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # bind parameter per placeholder, in order
    defaults: dict[str, Any]  # values the statement itself carries (e.g. the 1 in `attempts + 1`)


class Query:
    """A Core statement for DriverTransaction, compiled once per dialect. FOR UPDATE is rendered
    for PostgreSQL and dropped for SQLite, whose BEGIN IMMEDIATE already holds the write lock."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        # Names for a SELECT's result values (other statements return no rows here).
        selected = getattr(statement, "selected_columns", None)
        self.columns = tuple(selected.keys()) if selected is not None else ()
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)
            if not isinstance(compiled, SQLCompiler):  # DDL compiles differently
                raise TypeError(f"not a DML or SELECT statement: {self.statement}")
            defaults = {
                name: bind.value for name, bind in compiled.binds.items() if not bind.required
            }
            names = tuple(compiled.positiontup or ())
            found = self._compiled[dialect.name] = _Compiled(compiled.string, names, defaults)
        return found


class DriverTransaction:
    """Statements run on the driver connection (asyncpg or aiosqlite) inside one transaction."""

    def __init__(self, driver: Any, dialect: Dialect) -> None:
        self._driver = driver
        self._dialect = dialect
        self.dialect_name = dialect.name
        self._postgres = dialect.name == "postgresql"
        self._transaction: Any = None

    async def fetch(self, query: Query, **params: Any) -> list[dict[str, Any]]:
        rows = await self._run(query, params)
        return [dict(zip(query.columns, row, strict=True)) for row in rows]

    async def fetchone(self, query: Query, **params: Any) -> dict[str, Any] | None:
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None

    async def execute(self, query: Query, **params: Any) -> None:
        await self._run(query, params)

    async def _run(self, query: Query, params: dict[str, Any]) -> Sequence[Sequence[Any]]:
        compiled = query.compiled(self._dialect)
        names, defaults = compiled.names, compiled.defaults
        return await self.fetch_sql(
            compiled.sql, [params[name] if name in params else defaults[name] for name in names]
        )

    async def fetch_sql(self, sql: str, values: Sequence[Any]) -> Sequence[Sequence[Any]]:
        """Run SQL in the driver's own dialect and placeholder style; the rows as tuples."""
        with _as_store_error(sql):
            if self._postgres:
                return list(await self._driver.fetch(sql, *values))
            return list(await self._driver.execute_fetchall(sql, values))

    async def begin(self) -> None:
        with _as_store_error("BEGIN"):
            if self._postgres:
                self._transaction = self._driver.transaction()
                await self._transaction.start()
            else:
                # BEGIN IMMEDIATE, as every SQLite write transaction here (see _configure_sqlite).
                await self._driver.execute_fetchall("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        with _as_store_error("COMMIT"):
            await (self._transaction.commit() if self._postgres else self._driver.commit())

    async def rollback(self) -> None:
        with _as_store_error("ROLLBACK"):
            await (self._transaction.rollback() if self._postgres else self._driver.rollback())


@contextlib.contextmanager
def _as_store_error(sql: str) -> Iterator[None]:
    """Errors of the driver-level statement `sql`, raised as `_raise_as_store_error` says."""
    try:
        yield
    except Exception as error:
        _raise_as_store_error(error, sql)


def _raise_as_store_error(error: Exception, sql: str | None) -> NoReturn:
    """Raise a driver error as statements SQLAlchemy runs report theirs (see _report_outages):
    an outage as one of STORE_OUTAGE_ERRORS, anything else as a DBAPIError."""
    outage = as_store_outage(error, sql)
    if outage is not None:
        raise outage from error
    if isinstance(error, (SQLAlchemyError, *STORE_OUTAGE_ERRORS)):
        raise error
    raise DBAPIError(sql, None, error, hide_parameters=True) from error


@contextlib.asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[Any]:
    """A pooled connection's driver object (asyncpg or aiosqlite connection), for statements
    outside a transaction: each is its own transaction, committed before it returns (one round
    trip, or one hop to aiosqlite's thread, where BEGIN, the statement and COMMIT make three).
    On SQLite the process's writers take turns here first (see _one_sqlite_writer).
    If the block raises, the connection is discarded rather than pooled: it was used past
    SQLAlchemy's disconnect detection, so it may be dead or cancelled mid-statement."""
    async with _one_sqlite_writer(engine), _pooled(engine) as pooled:
        try:
            yield pooled.driver
        except BaseException:
            await pooled.discard()
            raise


@contextlib.asynccontextmanager
async def driver_transaction(engine: AsyncEngine) -> AsyncIterator[DriverTransaction]:
    """One transaction on a pooled connection's driver: committed when the block ends, rolled
    back when it raises. A connection left in an unknown state (a failed rollback or commit,
    a cancellation) is discarded rather than pooled."""
    async with _one_sqlite_writer(engine), _pooled(engine) as pooled:
        transaction = DriverTransaction(pooled.driver, engine.dialect)
        settled = False  # the connection is back outside any transaction
        try:
            await transaction.begin()
            try:
                yield transaction
            except Exception:
                await transaction.rollback()
                settled = True
                raise
            await transaction.commit()
            settled = True
        finally:
            if not settled:
                await pooled.discard()


@dataclass(frozen=True, slots=True)
class _Pooled:
    connection: PoolProxiedConnection
    driver: Any

    async def discard(self) -> None:
        # Closing the driver connection may need I/O, which SQLAlchemy's asyncio adapters do
        # from inside a greenlet.
        await greenlet_spawn(self.connection.invalidate)


@contextlib.asynccontextmanager
async def _pooled(engine: AsyncEngine) -> AsyncIterator[_Pooled]:
    """A connection checked out of the engine's pool itself: the pool's events still run (idle
    pings, the dialect's set-up of new connections) and it still opens, recycles and discards
    connections, but no Connection object is built around the checkout, which costs half of
    engine.connect() (~30 us of ~60 per checkout, on every batch and every reconciled event)."""
    try:
        connection = await greenlet_spawn(engine.sync_engine.pool.connect)
    except Exception as error:
        # The pool raises the driver's own errors: no Connection is there to wrap them (asyncpg's
        # CannotConnectNowError, from a server starting up, is neither a SQLAlchemyError nor an
        # OSError).
        _raise_as_store_error(error, None)
    try:
        driver = connection.driver_connection
        if driver is None:  # only a closed or detached connection has none
            raise RuntimeError("no driver connection")
        yield _Pooled(connection, driver)
    finally:
        await greenlet_spawn(connection.close)


_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _one_sqlite_writer(engine: AsyncEngine) -> AsyncIterator[None]:
    """SQLite runs one write transaction at a time: the process's own writers queue here, where
    waiting is free, instead of in SQLite's busy handler, where each of up to a pool's worth of
    driver threads sleeps and retries, competing for the GIL with the event loop."""
    if engine.dialect.name != "sqlite":
        yield
        return
    lock = _SQLITE_WRITERS.get(engine.sync_engine)
    if lock is None:
        lock = _SQLITE_WRITERS[engine.sync_engine] = asyncio.Lock()
    async with lock:
        yield
