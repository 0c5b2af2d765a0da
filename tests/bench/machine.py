"""What the numbers were measured on: hardware, versions, and how busy the machine was."""

from __future__ import annotations

import asyncio
import os
import platform
import sqlite3
import subprocess
from importlib.metadata import version
from pathlib import Path

import asyncpg
import redis
from sqlalchemy.engine import make_url

from tests.support import databases

LIBRARIES = ("aiohttp", "sqlalchemy", "asyncpg", "aiosqlite", "arq", "redis", "structlog")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def postgres_version() -> str:
    async def query() -> str:
        url = make_url(databases.postgres_admin_url()).set(drivername="postgresql")
        connection = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
        try:
            return str(await connection.fetchval("SHOW server_version"))
        finally:
            await connection.close()

    try:
        return asyncio.run(query())
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return "not reachable"


def redis_version(redis_url: str) -> str:
    client = redis.Redis.from_url(redis_url)
    try:
        info = client.info("server")
        return str(info["redis_version"]) if isinstance(info, dict) else "unknown"
    finally:
        client.close()


def wrk_version() -> str:
    completed = subprocess.run(
        ["wrk", "--version"], capture_output=True, text=True, check=False, timeout=10
    )
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].split(" Copyright")[0].removeprefix("wrk ") if first else "unknown"


def git_revision() -> str:
    def git(*args: str) -> str:
        completed = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=False, timeout=10
        )
        return completed.stdout.strip()

    revision = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{revision}{' + local changes' if git('status', '--porcelain') else ''}"


def describe(redis_url: str) -> list[tuple[str, str]]:
    libraries = ", ".join(f"{name} {version(name)}" for name in LIBRARIES)
    return [
        ("CPU", f"{os.cpu_count()} x {cpu_model()} (nproc {len(os.sched_getaffinity(0))})"),
        ("Python", platform.python_version()),
        ("SQLite", sqlite3.sqlite_version),
        ("PostgreSQL", postgres_version()),
        ("Redis", redis_version(redis_url)),
        ("wrk", wrk_version()),
        ("libraries", libraries),
        ("revision", git_revision()),
    ]
