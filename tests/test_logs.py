"""Per-request log lines (LOG_REQUESTS) carry the fields operators search by."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.exceptions import ConnectionClosed

from app.protocol import CloseCode, PkgID, RSPCode
from tests.server import ServerProcess, call, sqlite_url, ws_connect


def _records(srv: ServerProcess) -> list[dict[str, Any]]:
    out = []
    for raw in srv.log_text().splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


async def _session(srv: ServerProcess) -> tuple[str, dict[str, Any], dict[str, Any]]:
    srv.start()
    token = srv.login()
    async with ws_connect(srv, token) as ws:
        pong = await call(ws, PkgID.PING)
        assert pong["status_code"] == RSPCode.OK
        denied = await call(ws, 555)
        assert denied["status_code"] == RSPCode.UNKNOWN_PKG_ID
    return token, pong, denied


async def test_default_logs_every_answer_that_is_not_ok_with_its_fields() -> None:
    srv = ServerProcess(sqlite_url(), env={"LOG_FORMAT": "json"})  # LOG_REQUESTS=errors, LOG_LEVEL=INFO
    try:
        token, pong, denied = await _session(srv)
        records = _records(srv)
        lines = [r for r in records if r.get("req_id") == denied["req_id"]]
        assert len(lines) == 1, lines
        line = lines[0]
        assert line["level"] == "info" and line["pkg_id"] == 555
        assert line["status_code"] == RSPCode.UNKNOWN_PKG_ID
        assert line["user"] == "admin" and line["tenant"] == "default" and line["conn_id"].startswith("c")
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
        assert not [r for r in records if r.get("req_id") == pong["req_id"]], "successes are not logged"
        assert token not in srv.log_text()
    finally:
        srv.stop()


async def test_log_requests_all_logs_successes_and_off_logs_none() -> None:
    srv = ServerProcess(sqlite_url(), env={"LOG_FORMAT": "json", "LOG_REQUESTS": "all"})
    try:
        _, pong, denied = await _session(srv)
        records = _records(srv)
        (line,) = [r for r in records if r.get("req_id") == pong["req_id"]]
        assert line["status_code"] == RSPCode.OK and line["pkg_id"] == PkgID.PING
        assert [r for r in records if r.get("req_id") == denied["req_id"]]
    finally:
        srv.stop()
    srv = ServerProcess(sqlite_url(), env={"LOG_FORMAT": "json", "LOG_REQUESTS": "off"})
    try:
        _, pong, denied = await _session(srv)
        ids = {pong["req_id"], denied["req_id"]}
        assert not [r for r in _records(srv) if r.get("req_id") in ids]
    finally:
        srv.stop()


async def test_slow_successes_are_logged() -> None:
    # Every request is "slow" at a 0.001 ms threshold.
    srv = ServerProcess(sqlite_url(), env={"LOG_FORMAT": "json", "LOG_SLOW_REQUEST_MS": "0.001"})
    try:
        _, pong, _ = await _session(srv)
        (line,) = [r for r in _records(srv) if r.get("req_id") == pong["req_id"]]
        assert line["status_code"] == RSPCode.OK and line["duration_ms"] >= 0
    finally:
        srv.stop()


async def test_each_handshake_is_one_line_of_ours_and_none_of_uvicorns() -> None:
    """ "connected"/"disconnected" and "refused" carry the address; uvicorn's repeats are dropped."""
    srv = ServerProcess(sqlite_url(), env={"LOG_FORMAT": "json"})
    try:
        await _session(srv)
        wrong = "wpt_" + "x" * 40  # shaped like an API token: refused, and never written
        async with ws_connect(srv, wrong) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == CloseCode.AUTH_FAILED
        for _ in range(100):  # the server writes "disconnected" after the client's close
            if '"disconnected ' in srv.log_text():
                break
            await asyncio.sleep(0.05)
        messages = [r["msg"] for r in _records(srv)]
        (line,) = [m for m in messages if m.startswith("connected c")]
        assert " user=admin tenant=default kind=local addr=127.0.0.1:" in line
        conn_id = line.split()[1]
        assert f"disconnected {conn_id}" in messages
        (refused,) = [m for m in messages if m.startswith("refused ")]
        assert refused.startswith("refused code=4001 reason=") and " addr=127.0.0.1:" in refused
        assert not [m for m in messages if m == "connection open" or "[accepted]" in m], messages
        assert wrong[4:] not in srv.log_text()
    finally:
        srv.stop()
