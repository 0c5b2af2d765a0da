"""The SQLAlchemy pool internals the driver-level fast path (service.store.driver) checks out
connections with, on both real order stores.

The fast path takes connections from `engine.sync_engine.pool.connect()` inside
`sqlalchemy.util.greenlet_spawn`, talks to `PoolProxiedConnection.driver_connection` (the asyncpg
or aiosqlite connection) and discards a connection in doubt with `invalidate()`. None of that is
the documented asyncio API: a SQLAlchemy upgrade that changes it must fail here, naming the fast
path. The compiler side is pinned in tests/unit/test_store_driver_internals.py.
"""

from __future__ import annotations

from typing import Any

import aiosqlite
import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

CHANGED = (
    "service.store.driver (the hot paths' driver-level statements) relies on a SQLAlchemy "
    "internal that this SQLAlchemy version changed: {what}. Adapt service.store.driver "
    "before upgrading."
)
DRIVER_CLASSES: dict[str, type] = {"postgresql": asyncpg.Connection, "sqlite": aiosqlite.Connection}


async def _check_out(engine: AsyncEngine) -> PoolProxiedConnection:
    """A checkout as service.store.driver makes it."""
    return await greenlet_spawn(engine.sync_engine.pool.connect)


async def _answers(driver: Any) -> bool:
    """Whether a driver connection still runs a statement (a closed one refuses)."""
    try:
        if isinstance(driver, asyncpg.Connection):
            await driver.fetch("SELECT 1")
        else:
            await driver.execute_fetchall("SELECT 1", [])
    except (asyncpg.InterfaceError, ValueError):  # asyncpg's and aiosqlite's "closed"
        return False
    return True


async def test_a_pool_checkout_is_the_drivers_own_connection(engine: AsyncEngine) -> None:
    """`pool.connect()` returns a PoolProxiedConnection whose `driver_connection` is the asyncpg
    or aiosqlite connection, and closing it returns that connection to the pool."""
    connection = await _check_out(engine)
    try:
        assert isinstance(connection, PoolProxiedConnection), CHANGED.format(
            what=f"Pool.connect() returns {type(connection).__name__}, not PoolProxiedConnection"
        )
        driver = connection.driver_connection
        expected = DRIVER_CLASSES[engine.dialect.name]
        assert isinstance(driver, expected), CHANGED.format(
            what=f"PoolProxiedConnection.driver_connection is {type(driver).__name__}, "
            f"not {expected.__name__}"
        )
        assert await _answers(driver)
    finally:
        await greenlet_spawn(connection.close)

    again = await _check_out(engine)
    try:
        assert again.driver_connection is driver, CHANGED.format(
            what="PoolProxiedConnection.close() no longer returns the connection to the pool"
        )
    finally:
        await greenlet_spawn(again.close)


async def test_a_pool_checkout_runs_the_engines_checkout_events(engine: AsyncEngine) -> None:
    """The engine's `checkout` listeners (the idle-connection ping) run for `pool.connect()`."""
    checked_out: list[object] = []

    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        checked_out.append(dbapi_connection)

    event.listen(engine.sync_engine, "checkout", _on_checkout)
    try:
        connection = await _check_out(engine)
        await greenlet_spawn(connection.close)
    finally:
        event.remove(engine.sync_engine, "checkout", _on_checkout)
    assert len(checked_out) == 1, CHANGED.format(
        what="Pool.connect() no longer runs the engine's checkout events"
    )


async def test_invalidate_discards_the_driver_connection(engine: AsyncEngine) -> None:
    """`invalidate()` closes the driver connection and the pool never hands it out again."""
    connection = await _check_out(engine)
    driver = connection.driver_connection
    await greenlet_spawn(connection.invalidate)
    assert not connection.is_valid, CHANGED.format(what="invalidate() leaves the connection valid")
    await greenlet_spawn(connection.close)

    assert not await _answers(driver), CHANGED.format(
        what="invalidate() no longer closes the driver connection"
    )
    fresh = await _check_out(engine)
    try:
        assert fresh.driver_connection is not driver, CHANGED.format(
            what="the pool hands out a connection that was invalidated"
        )
        assert await _answers(fresh.driver_connection)
    finally:
        await greenlet_spawn(fresh.close)
