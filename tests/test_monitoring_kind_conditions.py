"""The condition language on the websocket, dns and tcp kinds, against real local servers
(the UDP DNS server and the WebSocket server of tests/kind_targets.py, a TCP listener):
conditions pass, fail with the failing text named, and ``warn:`` ones degrade; then through
the WebSocket API, a subject a kind does not offer is refused at MONITOR_CREATE, UPDATE and
CHECK_NOW, and a warn condition puts a dns monitor in ``degraded``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from app.monitoring import kinds
from app.monitoring.checks import CheckOutcome, run_tcp_check
from app.monitoring.conditions import parse_all
from app.protocol import PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, unique
from tests.kind_targets import DnsTarget, WsTarget
from tests.server import ServerProcess, call, ok, ws_connect
from tests.targets import TcpTarget


@pytest.fixture(scope="module")
def dns_server() -> Iterator[DnsTarget]:
    with DnsTarget() as target:
        yield target


@pytest.fixture(scope="module")
def ws_server() -> Iterator[WsTarget]:
    with WsTarget() as target:
        yield target


async def resolve(server: DnsTarget, host: str, conditions: list[str], **options: Any) -> CheckOutcome:
    values = {
        "host": host,
        "options": {"resolver": "127.0.0.1", "resolver_port": server.port, **options},
        "conditions": conditions,
    }
    return await kinds.run("dns", values, 3)


async def ws_check(url: str, conditions: list[str], **options: Any) -> CheckOutcome:
    return await kinds.run("websocket", {"url": url, "options": options, "conditions": conditions}, 3)


# ----- dns


async def test_dns_conditions_pass_on_the_answer_values(dns_server: DnsTarget) -> None:
    out = await resolve(
        dns_server,
        "api.watchpost.test",
        [
            '$ contains "192.0.2.10"',
            '$[1] == "192.0.2.11"',
            'body contains "192.0.2.11"',
            'body not contains "10.0.0"',
            "response_time < 3000",
        ],
    )
    assert out.ok and not out.degraded and out.error is None, out
    # A single value is the whole body.
    v6 = await resolve(dns_server, "v6.watchpost.test", ['body == "2001:db8::1"'], record_type="AAAA")
    assert v6.ok, v6
    # MX answers in their normal form, names lower-case without the final dot.
    mx = await resolve(dns_server, "watchpost.test", ['$[0] == "10 mail.watchpost.test"'], record_type="MX")
    assert mx.ok, mx


async def test_dns_failing_conditions_are_each_named(dns_server: DnsTarget) -> None:
    out = await resolve(
        dns_server,
        "api.watchpost.test",
        ['$ contains "192.0.2.99"', "response_time < 3000", 'body not contains "192.0.2.11"', "$[5] != null"],
    )
    assert not out.ok
    assert out.error == (
        '$: expected contains "192.0.2.99", got ["192.0.2.10","192.0.2.11"]; '
        'body: expected not to contain "192.0.2.11"; '
        "$[5]: expected != null, got nothing (no such path)"
    )
    # "$ contains" is an exact member, not a substring of one.
    partial = await resolve(dns_server, "api.watchpost.test", ['$ contains "192.0.2.1"'])
    assert not partial.ok and partial.error is not None and partial.error.startswith("$: expected contains")


async def test_dns_warn_condition_degrades_and_shorthand_still_fails_first(dns_server: DnsTarget) -> None:
    out = await resolve(dns_server, "api.watchpost.test", ['warn: $ contains "192.0.2.99"'])
    assert out.ok and out.degraded
    assert out.warning == '$: expected contains "192.0.2.99", got ["192.0.2.10","192.0.2.11"]'
    # The expected/match shorthand is judged before the conditions.
    short = await resolve(dns_server, "api.watchpost.test", ["response_time < 3000"], expected=["192.0.2.98"])
    assert short.error == "A answer [192.0.2.10, 192.0.2.11] has none of [192.0.2.98]"


# ----- websocket


async def test_websocket_conditions_on_the_first_answer(ws_server: WsTarget) -> None:
    ws_server.status = {"status": "UP", "queue": {"depth": 3}}
    good = await ws_check(
        ws_server.url("/status"),
        ['$.status == "UP"', "$.queue.depth < 100", 'body contains "queue"', "response_time < 3000"],
        send="?",
    )
    assert good.ok and not good.degraded and good.status_code == 101, good
    ws_server.status = {"status": "DEGRADED", "queue": {"depth": 250}}
    bad = await ws_check(
        ws_server.url("/status"),
        ['$.status == "UP"', "$.queue.depth < 100", "response_time < 3000"],
        send="?",
    )
    assert not bad.ok and bad.status_code == 101
    assert bad.error == '$.status: expected "UP", got "DEGRADED"; $.queue.depth: expected < 100, got 250'
    warned = await ws_check(
        ws_server.url("/status"), ["$.queue.depth > 0", "warn: $.queue.depth < 100"], send="?"
    )
    assert warned.ok and warned.degraded and warned.warning == "$.queue.depth: expected < 100, got 250"


async def test_websocket_body_conditions_and_shorthands_together(ws_server: WsTarget) -> None:
    echoed = await ws_check(ws_server.url("/echo"), ['body == "hello"'], send="hello")
    assert echoed.ok, echoed
    out = await ws_check(ws_server.url("/echo"), ['body not contains "hell"', "$.a == 1"], send="hello")
    assert out.error == 'body: expected not to contain "hell"; $.a: the body is not JSON (JSONDecodeError)'
    # The expect shorthand keeps working and is judged before the conditions.
    out = await ws_check(ws_server.url("/echo"), ['body contains "hello"'], send="hello", expect="bye")
    assert out.error == "first answer does not contain 'bye'"
    # Only response_time: no answer is waited for (the echo server says nothing unasked).
    fast = await ws_check(ws_server.url("/echo"), ["response_time < 3000"])
    assert fast.ok
    slow = await ws_check(ws_server.url("/echo"), ["response_time < 0"])
    assert (
        not slow.ok and slow.error is not None and slow.error.startswith("response_time: expected < 0, got ")
    )


async def test_websocket_condition_failure_masks_secret_header_values(ws_server: WsTarget) -> None:
    out = await ws_check(
        ws_server.url("/echo"),
        ['body == "fine"'],
        send="token Bearer ws-s3cret-77",
        headers={"Authorization": "Bearer ws-s3cret-77"},
    )
    assert not out.ok and out.error == 'body: expected "fine", got "token ***"'


# ----- tcp


async def test_tcp_response_time_conditions() -> None:
    with TcpTarget() as tcp:
        fine = await run_tcp_check("127.0.0.1", tcp.port, 5, conditions=parse_all(["response_time < 4000"]))
        assert fine.ok and not fine.degraded
        late = await run_tcp_check("127.0.0.1", tcp.port, 5, conditions=parse_all(["response_time < 0"]))
        assert not late.ok and late.latency_ms is not None
        assert late.error == f"response_time: expected < 0, got {round(late.latency_ms, 1):g}"
        warned = await run_tcp_check(
            "127.0.0.1", tcp.port, 5, conditions=parse_all(["warn: response_time < 0"])
        )
        assert warned.ok and warned.degraded
        assert warned.warning is not None and warned.warning.startswith("response_time: expected < 0")
        # Let the target close its side of each connection before it stops (no leaked socket).
        for _ in range(200):
            if tcp.connections >= 3:
                break
            await asyncio.sleep(0.02)


# ----- through the API


on_postgres = pytest.mark.parametrize("server", ["postgres"], indirect=True)


def _errors(resp: dict[str, Any]) -> dict[str, str]:
    assert resp["status_code"] == RSPCode.INVALID_DATA, resp
    return {e["path"]: e["msg"] for e in resp["data"]["errors"]}


@on_postgres
async def test_api_refuses_unavailable_subjects_and_records_degraded(
    server: ServerProcess, dns_server: DnsTarget, ws_server: WsTarget
) -> None:
    editor = await acreate_user(server.database_url, {unique("t"): "editor"})
    dns_def = {
        "name": unique("dns"),
        "kind": "dns",
        "host": "api.watchpost.test",
        "interval": 30,
        "timeout": 3,
        "options": {"resolver": "127.0.0.1", "resolver_port": dns_server.port},
    }
    async with ws_connect(server, server.login(editor, PASSWORD)) as ws:
        created = await call(
            ws, PkgID.MONITOR_CREATE, {**dns_def, "conditions": ["response_time < 500", "status == 200"]}
        )
        assert _errors(created) == {
            "conditions[1]": "conditions[1]: 'status' is not available for a dns monitor; "
            "use body, response_time or a $.json.path"
        }
        tested = await call(
            ws,
            PkgID.MONITOR_CHECK_NOW,
            {"monitor": {"kind": "tcp", "host": "127.0.0.1", "port": 9, "conditions": ['body contains "x"']}},
        )
        assert _errors(tested) == {
            "conditions[0]": "conditions[0]: 'body' is not available for a tcp monitor; use response_time"
        }
        unsaved = await ok(
            ws,
            PkgID.MONITOR_CHECK_NOW,
            {
                "monitor": {
                    "kind": "websocket",
                    "url": ws_server.url("/echo"),
                    "options": {"send": '{"status": "DOWN"}'},
                    "conditions": ['$.status == "UP"'],
                }
            },
        )
        assert unsaved["result"]["ok"] is False
        assert unsaved["result"]["error"] == '$.status: expected "UP", got "DOWN"'

        m = await ok(ws, PkgID.MONITOR_CREATE, {**dns_def, "conditions": ['$ contains "192.0.2.10"']})
        assert (await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]}))["state"] == "up"
        updated = await call(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": m["id"], "version": m["version"], "conditions": ['header.x-env == "prod"']},
        )
        assert _errors(updated)["conditions[0]"].startswith(
            "conditions[0]: 'header.x-env' is not available for a dns monitor"
        )
        await ok(
            ws,
            PkgID.MONITOR_UPDATE,
            {"id": m["id"], "version": m["version"], "conditions": ['warn: $ contains "192.0.2.99"']},
        )
        degraded = await ok(ws, PkgID.MONITOR_CHECK_NOW, {"id": m["id"]})
        assert degraded["state"] == "degraded"
        assert degraded["result"]["ok"] is True and degraded["result"]["degraded"] is True
        assert degraded["result"]["warning"].startswith('$: expected contains "192.0.2.99"')
