"""What the chaos tests need on the machine: PostgreSQL and the redis-server program.

Without them the tests are skipped, except under CI=true, where they fail: CI has both.
"""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from service.devtools.local_redis import find_redis_server
from tests.support import databases


async def require_infrastructure() -> None:
    missing = []
    admin = databases.postgres_admin_url()
    if not await databases.postgres_reachable(admin):
        shown = make_url(admin).render_as_string(hide_password=True)
        missing.append(f"PostgreSQL at {shown} (TEST_POSTGRES_URL)")
    if find_redis_server(allow_install=False) is None:
        missing.append("the redis-server program")
    if missing:
        message = f"chaos tests need {' and '.join(missing)}"
        if databases.ci_requires_postgres():
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
