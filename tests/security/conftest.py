"""Fixtures of the leak tests: a database and a Redis of their own, and logging put back.

The faults (tests.security.store_faults) change triggers and column types, so every test gets a
fresh `wooshpay_test_<random>` database; the service's processes use the fixed queue name, so
they get a private redis-server. Both URLs carry the canary passwords.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import LocalRedis, start_local_redis
from service.store.engine import create_engine
from tests.support import databases
from tests.support.leaks import with_redis_password
from tests.support.logging_state import logging_restored


@dataclass(frozen=True, slots=True)
class PrivateStore:
    url: str  # with the canary password, as the service's processes get it
    engine: AsyncEngine


@pytest_asyncio.fixture
async def private_store() -> AsyncIterator[PrivateStore]:
    """A migrated PostgreSQL database for one test, dropped afterwards."""
    admin = databases.postgres_admin_url()
    if not await databases.postgres_reachable(admin):
        shown = make_url(admin).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {shown} (set TEST_POSTGRES_URL)"
        if databases.ci_requires_postgres():
            pytest.fail(f"CI=true requires the PostgreSQL tests: {message}")
        pytest.skip(message)
    url = await databases.create_database(admin)
    engine = create_engine(url)
    try:
        await databases.migrate(url)
        yield PrivateStore(url, engine)
    finally:
        await engine.dispose()
        await databases.drop_database(admin, url)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[LocalRedis]:
    server = start_local_redis()
    yield server
    server.stop()


@pytest.fixture
def private_redis_url(private_redis: LocalRedis) -> str:
    """The private Redis's URL, with the canary password when the server accepts one."""
    client = redis.Redis.from_url(private_redis.url)
    try:
        client.flushall()  # nothing queued by an earlier test
    finally:
        client.close()
    return with_redis_password(private_redis.url)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back so other tests are unaffected."""
    with logging_restored():
        yield
