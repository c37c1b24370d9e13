"""The suite never skips the PostgreSQL/Redis tests: it stops and says how to start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run_with(env_overrides: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_protocol.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_unreachable_postgres_stops_the_run() -> None:
    proc = _run_with({"TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/postgres"})
    assert proc.returncode == 3
    out = proc.stdout + proc.stderr
    assert "PostgreSQL is not reachable at postgresql://postgres@127.0.0.1:1/postgres" in out
    assert "docker compose up -d postgres redis" in out


def test_unreachable_redis_stops_the_run() -> None:
    proc = _run_with({"TEST_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert proc.returncode == 3
    assert "Redis is not reachable at redis://127.0.0.1:1/0" in proc.stdout + proc.stderr
