"""``python -m app create-user`` against a real database, used by a real server."""

from __future__ import annotations

import os
import subprocess
import sys

from app.protocol import PkgID
from tests.fixtures import unique
from tests.server import ROOT, ServerProcess, ok, sqlite_url, ws_connect


def create_user(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "app", "create-user", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_created_user_logs_in_with_its_role_in_a_new_tenant() -> None:
    srv = ServerProcess(sqlite_url()).start()
    try:
        name, slug = unique("cli"), unique("ops")
        proc = create_user(
            srv.database_url, name, "--password", "cli-password", "--tenant", slug, "--role", "editor"
        )
        assert proc.returncode == 0, proc.stderr
        assert f"created {name!r} as editor of {slug!r}" in proc.stdout
        async with ws_connect(srv, srv.login(name, "cli-password"), tenant=slug) as ws:
            me = await ok(ws, PkgID.WHOAMI)
        assert (me["user"], me["tenant"], me["roles"], me["platform_admin"]) == (
            name,
            slug,
            ["editor"],
            False,
        )

        again = create_user(srv.database_url, name, "--password", "other-password", "--tenant", slug)
        assert again.returncode == 1 and f"user {name!r} exists" in again.stderr
        bad_role = create_user(srv.database_url, unique("cli"), "--password", "x" * 12, "--role", "superuser")
        assert bad_role.returncode == 2 and "unknown role 'superuser'" in bad_role.stderr
    finally:
        srv.stop()


async def test_created_platform_admin_joins_the_existing_default_tenant() -> None:
    srv = ServerProcess(sqlite_url()).start()
    try:
        name = unique("cli")
        proc = create_user(
            srv.database_url, name, "--password", "cli-password", "--platform-admin", "--role", "viewer"
        )
        assert proc.returncode == 0, proc.stderr
        async with ws_connect(srv, srv.login(name, "cli-password"), tenant="default") as ws:
            me = await ok(ws, PkgID.WHOAMI)
        assert (me["tenant"], me["roles"], me["platform_admin"]) == ("default", ["viewer"], True)
    finally:
        srv.stop()
