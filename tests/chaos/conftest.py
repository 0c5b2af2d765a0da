"""Fixtures of the chaos tests: a private PostgreSQL database and a private redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, start_local_redis
from service.store.engine import create_engine
from service.store.migrate import upgrade
from tests.chaos.infrastructure import require_infrastructure
from tests.chaos.system import create_database
from tests.support import databases


@pytest_asyncio.fixture
async def private_store() -> AsyncIterator[AsyncEngine]:
    """A migrated `chaos_<random>` database of its own, dropped afterwards."""
    await require_infrastructure()
    admin = databases.postgres_admin_url()
    url = await create_database(admin)
    engine = create_engine(url)
    try:
        await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()
        await databases.drop_database(admin, url)


@pytest_asyncio.fixture
async def private_redis() -> AsyncIterator[LocalRedis]:
    await require_infrastructure()
    server = start_local_redis()
    try:
        yield server
    finally:
        server.stop()
