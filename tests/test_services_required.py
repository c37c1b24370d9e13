"""The service-backed layers never skip PostgreSQL/Redis: the run stops and says how to start
them. The pure layer (tests/unit) needs neither and runs with both down."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Port 1 refuses connections at once, so "down" costs no timeout.
NO_POSTGRES = {"TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/postgres"}
NO_REDIS = {"TEST_REDIS_URL": "redis://127.0.0.1:1/0"}
# Collected only: the run must stop before any test of this file starts a server.
SERVICE_BACKED = "tests/test_ws_core.py"


def _pytest(env_overrides: dict[str, str], *paths: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_postgres_stops_the_run() -> None:
    proc = _pytest(NO_POSTGRES, SERVICE_BACKED)
    assert proc.returncode == 3
    out = proc.stdout + proc.stderr
    assert "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres" in out
    assert "docker compose up -d postgres redis" in out
    assert "no tests ran" in out


def test_unreachable_redis_stops_the_run() -> None:
    proc = _pytest(NO_REDIS, SERVICE_BACKED)
    assert proc.returncode == 3
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in proc.stdout + proc.stderr


def test_one_service_backed_test_among_pure_ones_still_needs_the_services() -> None:
    proc = _pytest(NO_REDIS, "tests/unit/test_protocol.py", SERVICE_BACKED)
    assert proc.returncode == 3
    assert "Redis is not reachable" in proc.stdout + proc.stderr


def test_the_pure_layer_runs_with_both_services_down() -> None:
    # Two of its files stand for the layer here; `make test` runs all of tests/unit this way.
    proc = _pytest({**NO_POSTGRES, **NO_REDIS}, "tests/unit/test_protocol.py", "tests/unit/test_routing.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "not reachable" not in out
    assert " passed" in out
