"""Schema migrations with Alembic, run programmatically (`wooshpay-webhooks migrate`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SCRIPT_LOCATION = "service.store:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        # env.py runs the migration on this connection instead of opening its own.
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Create or upgrade the schema to `revision`; safe to run any number of times."""
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Building an index on a large table may take longer than the service's
            # statement_timeout; SET LOCAL ends with this transaction.
            await connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        await connection.run_sync(_upgrade_sync, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )


def _upgrade_sync(connection: Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)
