"""actions.json loading and the fail-closed start-up check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.handlers import build_router
from app.protocol import PkgID
from app.rbac import RBACConfigError, load_policy


def test_every_registered_package_has_an_entry() -> None:
    policy = load_policy()
    policy.check_registry(build_router().specs)


def test_role_ladder() -> None:
    policy = load_policy()
    assert policy.allows(1, "viewer")
    assert not policy.allows(100, "viewer")
    assert policy.allows(100, "editor") and policy.allows(100, "owner")
    assert not policy.allows(700, "editor")
    assert not policy.allows(4, None)
    assert not policy.allows(99999, "owner")


def test_session_packages_need_no_tenant_role() -> None:
    policy = load_policy()
    for pkg_id in (PkgID.PING, PkgID.WHOAMI, PkgID.AUTH_REFRESH, PkgID.TENANT_LIST, PkgID.TENANT_CREATE):
        assert policy.allows(pkg_id, None), pkg_id
    assert not policy.allows(PkgID.SUBSCRIBE, None)
    assert not policy.allows(PkgID.TENANT_GET, None)


def test_missing_entry_fails_closed(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["1"]
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RBACConfigError, match=r"\[1\]"):
        load_policy(path).check_registry(build_router().specs)


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    raw["ws"]["1"] = "superuser"
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RBACConfigError, match="unknown role 'superuser'"):
        load_policy(path)


def test_server_refuses_to_start_without_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["2"]
    (tmp_path / "actions.json").write_text(json.dumps(raw))
    path = str(tmp_path / "actions.json")
    code = (
        f"import app.rbac as r, pathlib; r.DEFAULT_PATH = pathlib.Path({path!r});"
        "from app import create_app; from app.settings import Settings;"
        "create_app(Settings.from_env(env={}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no 'ws' entry for registered package ids [2]" in proc.stderr


def test_server_refuses_to_start_with_actions_path_missing_an_entry(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["3"]
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(raw))
    code = "from app import create_app; from app.settings import Settings; create_app(Settings.from_env())"
    env = {**os.environ, "ACTIONS_PATH": str(path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "no 'ws' entry for registered package ids [3]" in proc.stderr


def _roles_file(tmp_path: Path, changes: dict[str, tuple[str, str]]) -> Path:
    """A copy of actions.json with ws roles changed (each asserted to start as expected)."""
    raw = json.loads(Path("actions.json").read_text())
    for key, (before, after) in changes.items():
        assert raw["ws"][key] == before
        raw["ws"][key] = after
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(raw))
    return path


async def test_server_enforces_the_roles_of_actions_path(tmp_path: Path) -> None:
    """A server started with ACTIONS_PATH answers by that file: SERVER_INFO raised to owner
    is refused to a viewer, who may call it under the shipped file."""
    from app.protocol import RSPCode
    from tests.fixtures import PASSWORD, acreate_user, unique
    from tests.server import ServerProcess, call, sqlite_url, ws_connect

    path = _roles_file(tmp_path, {str(int(PkgID.SERVER_INFO)): ("viewer", "owner")})
    srv = ServerProcess(sqlite_url(), env={"ACTIONS_PATH": str(path)}).start()
    try:
        slug = unique("t")
        viewer = await acreate_user(srv.database_url, {slug: "viewer"})
        owner = await acreate_user(srv.database_url, {slug: "owner"})
        async with ws_connect(srv, srv.login(viewer, PASSWORD), tenant=slug) as ws:
            refused = await call(ws, PkgID.SERVER_INFO)
        async with ws_connect(srv, srv.login(owner, PASSWORD), tenant=slug) as ws:
            allowed = await call(ws, PkgID.SERVER_INFO)
    finally:
        srv.stop()
    assert refused["status_code"] == RSPCode.PERMISSION_DENIED, refused
    assert allowed["status_code"] == RSPCode.OK, allowed
