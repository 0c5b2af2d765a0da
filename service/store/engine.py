"""Creating the async engine for the configured order store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# SQLite waits this long for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


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
        engine = create_async_engine(url)
        _configure_sqlite(engine)
        return engine
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        # Fail fast when the database is unreachable, so the ingress answers 503 promptly.
        connect_args={"timeout": 5, "command_timeout": 30},
    )


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
