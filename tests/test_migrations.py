"""Alembic: empty → head → base on SQLite and PostgreSQL, and models match migrations."""

from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.storage.migrate import downgrade, upgrade
from tests.server import sqlite_url


async def _tables_and_diff(url: str) -> tuple[set[str], list[object]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:

            def inspect_sync(sync_conn: object) -> tuple[set[str], list[object]]:
                tables = set(inspect(sync_conn).get_table_names())  # type: ignore[arg-type]
                ctx = MigrationContext.configure(sync_conn, opts={"compare_type": False})  # type: ignore[arg-type]
                return tables, compare_metadata(ctx, SQLModel.metadata)

            return await conn.run_sync(inspect_sync)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_downgrade_roundtrip(backend: str, request: pytest.FixtureRequest) -> None:
    url = sqlite_url() if backend == "sqlite" else request.getfixturevalue("pg_url")
    upgrade(url)
    tables, diff = asyncio.run(_tables_and_diff(url))
    assert {"users", "tenants", "memberships", "api_tokens", "audit_log"} <= tables
    assert diff == [], f"models and migrations differ: {diff}"
    downgrade(url, "base")
    tables, _ = asyncio.run(_tables_and_diff(url))
    assert tables <= {"alembic_version"}
    upgrade(url)  # and back up again
    tables, _ = asyncio.run(_tables_and_diff(url))
    assert "users" in tables
