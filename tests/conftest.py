"""Shared fixtures: real Redis and real databases (SQLite and PostgreSQL), never mocks.

- Redis: REDIS_URL if it answers, else a private redis-server started for the run. Each test
  gets its own arq queue name, so tests never see each other's jobs.
- Order store: `store_url` is parametrised over SQLite (a file per test) and PostgreSQL (one
  private database per run, truncated before each test). Without a PostgreSQL server the
  PostgreSQL cases are skipped, except with CI=true, where they fail.
- Leaks: the webhook secret, the PostgreSQL and Redis passwords and the customer in events are
  canaries (tests.support.leaks). After every test phase, the phase's captured output and
  everything the service processes printed meanwhile are searched for them, and a test whose
  output holds one fails, naming the canary and where it was (tests.support.leak_watch).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from arq.connections import ArqRedis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from service.devtools.local_redis import ensure_redis
from service.queue import create_redis
from service.secrets import Secret, SecretUrl
from service.settings import Settings
from service.store.engine import create_engine
from service.store.migrate import upgrade
from tests.support import databases, leak_watch
from tests.support.leaks import webhook_secret, with_redis_password

SECRET = webhook_secret("suite")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    url, _started = ensure_redis(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
    return with_redis_password(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL database, migrated once for the whole run."""
    admin = databases.postgres_admin_url()
    if not asyncio.run(databases.postgres_reachable(admin)):
        shown = make_url(admin).render_as_string(hide_password=True)
        message = f"PostgreSQL not reachable at {shown} (set TEST_POSTGRES_URL)"
        if databases.ci_requires_postgres():
            pytest.fail(f"CI=true requires the PostgreSQL tests: {message}")
        pytest.skip(message)
    url = asyncio.run(databases.create_database(admin))
    asyncio.run(databases.migrate(url))
    yield url
    asyncio.run(databases.drop_database(admin, url))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The order store URL, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'orders.db'}"


@pytest_asyncio.fixture
async def engine(store_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated, empty order store."""
    engine = create_engine(store_url)
    await upgrade(engine)
    await databases.truncate_all(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def queue_name() -> str:
    return f"wooshpay:test:{uuid.uuid4().hex}"


@pytest_asyncio.fixture
async def redis(redis_url: str, queue_name: str) -> AsyncIterator[ArqRedis]:
    pool = create_redis(redis_url, queue_name=queue_name)
    yield pool
    await pool.delete(queue_name)
    await pool.aclose()


@pytest.fixture
def settings(store_url: str, redis_url: str) -> Settings:
    return Settings(
        webhook_secrets=(Secret(SECRET),),
        redis_url=SecretUrl(redis_url),
        database_url=SecretUrl(store_url),
        retry_max_attempts=3,
        retry_base_delay_s=0.05,
        sweep_interval_s=0.2,
        log_format="console",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Fail the test phase whose output (captured, or printed by a service process) holds a
    canary; never show a canary in a report."""
    report = yield
    findings = leak_watch.phase_findings(report)
    if findings:
        leak_watch.fail_report(report, findings)
    elif report.failed:
        leak_watch.redact_report(report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a process printed a canary after the last test phase."""
    findings = leak_watch.final_findings()
    if not findings:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", leak_watch.SECTION_TITLE, red=True)
        for finding in findings:
            reporter.write_line(finding)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
