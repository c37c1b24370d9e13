"""The per-request log line (LOG_LEVEL=DEBUG) carries the fields operators search by."""

from __future__ import annotations

import json

from app.protocol import PkgID, RSPCode
from tests.server import ServerProcess, call, ok, sqlite_url, ws_connect


async def test_debug_request_line_has_req_id_pkg_conn_user_tenant_status_duration() -> None:
    srv = ServerProcess(sqlite_url(), env={"LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"})
    try:
        srv.start()
        token = srv.login()
        async with ws_connect(srv, token) as ws:
            await ok(ws, PkgID.PING)
            denied = await call(ws, 555)
            assert denied["status_code"] == RSPCode.UNKNOWN_PKG_ID
        lines = []
        for raw in srv.log_text().splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if record.get("req_id") == denied["req_id"]:
                lines.append(record)
        assert len(lines) == 1, lines
        line = lines[0]
        assert (
            line["level"] == "debug"
            and line["pkg_id"] == 555
            and line["status_code"] == RSPCode.UNKNOWN_PKG_ID
        )
        assert line["user"] == "admin" and line["tenant"] == "default" and line["conn_id"].startswith("c")
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert token not in srv.log_text()
    finally:
        srv.stop()
