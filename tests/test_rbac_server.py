"""A server started with ACTIONS_PATH enforces that file's roles (the policy: tests/unit/test_rbac.py)."""

from __future__ import annotations

import json
from pathlib import Path

from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.server import ServerProcess, call, sqlite_url, ws_connect


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
