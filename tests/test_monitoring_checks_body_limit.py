"""HTTP checks read at most CHECK_MAX_BODY_BYTES of a response, streaming: a target that
sends hundreds of MiB costs the server bounded memory, and a keyword search says how much
it looked at. Real server process, real target streaming a body generated on the fly. The
reader and the error scrubbing alone: tests/unit/test_monitoring_checks_body.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.protocol import PkgID
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.hostile_targets import StreamTarget
from tests.server import ServerProcess, ok, sqlite_url, ws_connect

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProcess]:
    server = ServerProcess(sqlite_url()).start()
    try:
        yield server
    finally:
        server.stop()


async def test_check_now_on_a_huge_body_keeps_memory_bounded(srv: ServerProcess) -> None:
    assert srv.proc is not None
    editor = await acreate_user(srv.database_url, {unique("t"): "editor"})
    with StreamTarget(200 * MiB) as target:
        async with ws_connect(srv, srv.login(editor, PASSWORD)) as ws:
            warm = {"kind": "http", "url": target.url("/warm"), "timeout": 5, "keyword": "x"}
            await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": warm})  # imports, clients, buffers
            before = rss_bytes(srv.proc.pid)
            unsaved = {"kind": "http", "url": target.url("/big"), "timeout": 8}
            result = (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": unsaved}))["result"]
            assert result["ok"] is True and result["status_code"] == 200, result
            saved = await ok(
                ws, PkgID.MONITOR_CREATE, {"name": unique("big"), "kind": "http", "url": target.url("/big")}
            )
            recorded = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": saved["id"]})
            assert recorded["result"]["ok"] is True, recorded
            grown = rss_bytes(srv.proc.pid) - before
        # 400 MiB were offered; the server kept about 1 MiB of each (plus socket buffers).
        assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB"
        assert target.sent < 100 * MiB, f"the check read {target.sent / MiB:.0f} MiB of a 200 MiB body"


async def test_keyword_is_searched_in_what_was_read_and_the_result_says_so(srv: ServerProcess) -> None:
    editor = await acreate_user(srv.database_url, {unique("t"): "editor"})
    async with ws_connect(srv, srv.login(editor, PASSWORD)) as ws:
        with StreamTarget(3 * MiB) as target:
            probe = {"kind": "http", "url": target.url("/"), "timeout": 5, "keyword": "needle"}
            result = (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": probe}))["result"]
            assert result["ok"] is False
            assert result["error"] == "keyword 'needle' not found in the first 1048576 bytes"
            probe["keyword"] = "xxxx"
            assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": probe}))["result"]["ok"] is True
        with StreamTarget(1000) as small:
            probe = {"kind": "http", "url": small.url("/"), "timeout": 5, "keyword": "needle"}
            result = (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"monitor": probe}))["result"]
            assert result["error"] == "keyword 'needle' not found in the body"
