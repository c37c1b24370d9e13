from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests import services


def pytest_sessionstart(session: pytest.Session) -> None:
    problem = services.check_services()
    if problem:
        pytest.exit(problem, returncode=3)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    services.drop_created_databases()


@pytest.fixture(scope="session")
def redis_url() -> str:
    return services.redis_test_url()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to one test, so runs never see each other's keys."""
    return f"wptest:{uuid.uuid4().hex[:10]}:"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (SQLAlchemy asyncpg URL)."""
    yield services.create_pg_database()
