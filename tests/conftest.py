from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests import services
from tests.targets import HttpTarget

ROOT = Path(__file__).resolve().parent.parent
# Hypothesis keeps its example database and caches with the other test output
# (test-artifacts/, ignored by git) rather than in a .hypothesis folder at the top.
set_hypothesis_home_dir(ROOT / "test-artifacts" / "hypothesis")

# The pure layer: tests that start no server and touch no database or Redis. It runs
# first (make test-fast) and must pass with PostgreSQL and Redis down.
PURE_LAYER = Path(__file__).resolve().parent / "unit"


@pytest.fixture
def target() -> Iterator[HttpTarget]:
    """A loopback HTTP target the test scripts (``target.respond(path, status)``), one per test."""
    with HttpTarget() as t:
        yield t


def pytest_collection_finish(session: pytest.Session) -> None:
    # Checked after collection, not at session start, so that a run of the pure layer
    # alone never waits for (or on) services it does not use.
    if all(item.path.is_relative_to(PURE_LAYER) for item in session.items):
        return
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


# ----- real servers shared by a whole run (one per storage backend)

from tests.server import ServerProcess, sqlite_url  # noqa: E402

_shared: dict[str, ServerProcess] = {}


def database_url_for(backend: str) -> str:
    return sqlite_url() if backend == "sqlite" else services.create_pg_database()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A running server with default settings (rate limits high), on SQLite and on PostgreSQL.

    Shared by the session: tests create their own tenants and users (tests.fixtures)
    so they never depend on each other's data.
    """
    backend = request.param
    if backend not in _shared:
        srv = ServerProcess(
            database_url_for(backend),
            env={
                "WS_MESSAGE_RATE_LIMIT": "100000",
                "RATE_LIMIT_PER_MINUTE": "100000",
                "RATE_LIMIT_BURST": "10000",
                "WS_MAX_CONNECTIONS_PER_USER": "1000",
                # Anonymous status-page sockets all come from loopback here.
                "STATUS_PAGE_MAX_PER_ADDRESS": "1000",
            },
        )
        srv.backend = backend  # type: ignore[attr-defined]
        srv.start()
        _shared[backend] = srv
    yield _shared[backend]


@pytest.fixture(scope="session", autouse=True)
def _stop_shared_servers() -> Iterator[None]:
    yield
    for srv in _shared.values():
        srv.stop()
    _shared.clear()


@pytest.fixture
def admin_token(server: ServerProcess) -> str:
    return server.login()
