"""The hot paths' statements, run on the driver object (asyncpg or aiosqlite connection) of a
connection checked out of the engine's pool.

Through SQLAlchemy every statement pays, on top of the driver, for work the hot paths do not
need (statement construction, cache keys, an execution context, greenlet switches, and four
trips to aiosqlite's thread where one does), and the reconciler runs about ten statements per
event. The hot paths therefore run Core statements compiled once per dialect on the pooled
connection's driver object (the figures are in the README's performance section). SQLAlchemy
still owns the pool: checkout, idle pings and discarding broken connections.

This module is the only one that reaches below SQLAlchemy's public API, and it relies on:
`SQLCompiler.positiontup` (bind names in placeholder order) and `SQLCompiler.binds` (`required`,
`value`), `sqlalchemy.util.greenlet_spawn`, `Pool.connect()` returning a
`PoolProxiedConnection` whose `driver_connection` is the driver's own connection, and
`PoolProxiedConnection.invalidate()`. tests/unit/test_store_driver_internals.py and
tests/integration/test_store_driver_pool.py pin each one.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.util import greenlet_spawn

from service.store.outages import STORE_OUTAGE_ERRORS, as_store_outage


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
                # Every transaction here writes: BEGIN IMMEDIATE, as the engine's SQLite write
                # transactions (see service.store.engine).
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
    """Raise a driver error as statements SQLAlchemy runs report theirs (the engine's
    `handle_error` hook): an outage as one of STORE_OUTAGE_ERRORS, anything else as a
    DBAPIError."""
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
    connections, but no Connection object is built around the checkout: the driver-level paths
    never use one, and a checkout happens for every batch and every reconciled event."""
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
