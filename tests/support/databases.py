"""Real databases for tests: a SQLite file per test, or a private PostgreSQL database per run."""

from __future__ import annotations

import os
import uuid

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store.engine import create_engine
from service.store.migrate import upgrade
from tests.support.leaks import with_database_password

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
TABLES = ("unmatched_event_keys", "order_links", "refunds", "orders", "events")


def postgres_admin_url() -> str:
    """TEST_POSTGRES_URL (or the default), with the canary password when it has none: a server
    with trust authentication ignores it, and the suite's log scan proves no output prints it."""
    return with_database_password(os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))


def ci_requires_postgres() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


async def postgres_reachable(url: str) -> bool:
    try:
        connection = await asyncpg.connect(_asyncpg_dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await connection.close()
    return True


async def create_database(admin_url: str) -> str:
    """Create a uniquely named database next to `admin_url`'s; return its URL."""
    name = f"wooshpay_test_{uuid.uuid4().hex[:12]}"
    connection = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=5)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


async def drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    connection = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=5)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def truncate_all(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(TABLES)}"))
        else:
            for table in TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def migrate(url: str) -> None:
    """Bring a store to the current schema, as `migrate` does."""
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
