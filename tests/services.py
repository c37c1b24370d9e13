"""Real PostgreSQL and Redis for the test suite.

The suite never skips these: if one is unreachable it stops at once and says
which URL it tried and how to start the service.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

HOW_TO_START = (
    "start it with `docker compose up -d postgres redis`, or the local services:\n"
    "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
    '  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
)


async def _pg_ping() -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    await conn.close()


async def _redis_ping() -> None:
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        await client.ping()
    finally:
        await client.aclose()


def check_services() -> str | None:
    """None when both services answer, else a message for ``pytest.exit``."""
    for name, url, probe in (("PostgreSQL", PG_ADMIN_URL, _pg_ping), ("Redis", REDIS_URL, _redis_ping)):
        try:
            asyncio.run(probe())
        except Exception as exc:  # noqa: BLE001 - any failure means unreachable
            return f"{name} is not reachable at {url} ({exc!r}); {HOW_TO_START}"
    return None


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


_created: list[str] = []


def create_pg_database() -> str:
    """Create a fresh, uniquely named database; returns its SQLAlchemy asyncpg URL."""
    name = f"watchpost_test_{uuid.uuid4().hex[:12]}"

    async def _create() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(_create())
    _created.append(name)
    return _with_db(PG_ADMIN_URL, name).replace("postgresql://", "postgresql+asyncpg://", 1)


def drop_created_databases() -> None:
    async def _drop() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            for name in _created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    if _created:
        asyncio.run(_drop())
        _created.clear()


def redis_test_url() -> str:
    """Redis URL for this run; tests isolate themselves with a unique key prefix."""
    return REDIS_URL
