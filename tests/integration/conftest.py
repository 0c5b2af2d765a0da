"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ingress.app import create_app
from service.settings import Settings
from tests.support.webhooks import Client, open_client


@pytest_asyncio.fixture
async def client(settings: Settings, engine: AsyncEngine, redis: ArqRedis) -> AsyncIterator[Client]:
    """The ingress on the test's order store and the test's arq queue, with fresh metrics."""
    client = await open_client(create_app(settings, engine=engine, redis=redis))
    yield client
    await client.close()
