"""app.client against real servers: calls, typed errors, reconnect and recovery, in-band refresh, CLI.
(Its pieces without a socket: tests/unit/test_client_transport.py, test_client_subscription.py.)

Client behaviour does not depend on the storage backend, so the shared server is
used on SQLite only; the servers this module starts itself use SQLite too (the
Redis-backed one shares its broker with the test, which publishes events
through a real ``RedisBroker`` while the server is down — exactly what another
instance would do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.broker.redis import RedisBroker
from app.client import (
    AuthenticationFailed,
    Conflict,
    ConnectionLost,
    Event,
    InvalidData,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestTimeout,
    Resync,
    Timeout,
    Unauthenticated,
    UnknownPkgId,
    WatchpostClient,
    WatchpostError,
)
from app.events import scoped
from app.protocol import CloseCode, PkgID, RSPCode
from tests.fixtures import PASSWORD, acreate_user, aset_role, unique
from tests.server import ADMIN_PASSWORD, ROOT, ServerProcess, sqlite_url

#: The shared ``server`` fixture, on SQLite only (the client does not care about storage).
ON_SQLITE = pytest.mark.parametrize("server", ["sqlite"], indirect=True)

#: Generous limits so only the test that is about a limit ever meets one.
_NO_LIMITS = {
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
    "WS_MAX_CONNECTIONS_PER_USER": "1000",
}
_HISTORY = 5


@pytest.fixture(scope="module")
def _own_servers(redis_url: str) -> Iterator[dict[str, ServerProcess]]:
    """The servers with special settings this module needs, started side by side (startup dominates)."""
    prefix = f"wptest:{uuid.uuid4().hex[:10]}:"
    envs = {
        # A handler deadline of 1 µs: PING answers (it never awaits); database reads time out.
        "timeout": {"WS_HANDLER_TIMEOUT": "0.000001"},
        # 10 messages per user per minute; tokens live 6 s, EVENT_AUTH_EXPIRING 4 s before expiry.
        "strict": {"WS_MESSAGE_RATE_LIMIT": "10", "ACCESS_TOKEN_TTL": "6", "AUTH_EXPIRING_NOTICE": "4"},
        # Redis broker keeping 5 events per topic, under a key prefix of its own.
        "redis": {"REDIS_URL": redis_url, "REDIS_PREFIX": prefix, "EVENT_HISTORY_SIZE": str(_HISTORY)},
    }
    servers = {name: ServerProcess(sqlite_url(), env={**_NO_LIMITS, **env}) for name, env in envs.items()}
    servers["redis"].redis_prefix = prefix  # type: ignore[attr-defined]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:
            for started in [pool.submit(srv.start) for srv in servers.values()]:
                started.result()
        yield servers
    finally:
        for srv in servers.values():
            srv.kill()  # nothing to drain; SIGKILL keeps the module fast


@pytest.fixture
def timeout_server(_own_servers: dict[str, ServerProcess]) -> ServerProcess:
    return _own_servers["timeout"]


@pytest.fixture
def strict_server(_own_servers: dict[str, ServerProcess]) -> ServerProcess:
    return _own_servers["strict"]


@pytest.fixture
def redis_server(_own_servers: dict[str, ServerProcess]) -> ServerProcess:
    return _own_servers["redis"]


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> str:
    """One admin token for the module (each login costs an argon2 hash)."""
    return server.login()


@contextlib.asynccontextmanager
async def _publisher(srv: ServerProcess, redis_url: str) -> AsyncIterator[RedisBroker]:
    """A broker on the server's Redis: what any other instance would publish through."""
    broker = RedisBroker(redis_url, prefix=srv.redis_prefix, history_size=_HISTORY)  # type: ignore[attr-defined]
    await broker.start()
    try:
        yield broker
    finally:
        await broker.close()


async def _publish(broker: RedisBroker, tenant_id: int, n: int) -> int:
    return await broker.publish(
        scoped(tenant_id, "monitors"), "monitors", PkgID.EVENT_MONITOR_CHANGED, {"n": n}
    )


async def _next(events: Any, wait: float = 20.0) -> Event | Resync:
    item: Event | Resync = await asyncio.wait_for(anext(events), wait)
    return item


async def _login(srv: ServerProcess, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    return await asyncio.to_thread(srv.login, username, password)


# ----- calls


@ON_SQLITE
async def test_call_returns_data_and_call_full_returns_meta(server: ServerProcess, admin: str) -> None:
    async with WatchpostClient(server.ws_url, admin) as client:
        assert client.connected
        pong = await client.call(PkgID.PING)
        assert pong["pong"] is True and abs(pong["server_time"] - time.time()) < 60
        me = await client.whoami()
        assert me["user"] == "admin" and me["tenant"] == "default" and me["roles"] == ["owner"]
        page = await client.call_full(PkgID.TOKEN_LIST, {"page": 1, "per_page": 5})
        assert isinstance(page.data, list)
        assert page.meta is not None and page.meta["page"] == 1 and page.meta["per_page"] == 5
    assert not client.connected
    with pytest.raises(ConnectionLost, match="not connected"):
        await client.call(PkgID.PING)


@ON_SQLITE
async def test_concurrent_calls_get_their_own_answers(server: ServerProcess, admin: str) -> None:
    async with WatchpostClient(server.ws_url, admin) as client:
        kinds = [PkgID.PING, PkgID.WHOAMI, PkgID.SERVER_INFO, PkgID.TOKEN_LIST] * 15
        results = await asyncio.gather(*(client.call(k) for k in kinds))
    for kind, result in zip(kinds, results, strict=True):
        if kind == PkgID.PING:
            assert result["pong"] is True
        elif kind == PkgID.WHOAMI:
            assert result["user"] == "admin"
        elif kind == PkgID.SERVER_INFO:
            assert result["protocol"] == 1
        else:
            assert isinstance(result, list)


async def _viewer_token(srv: ServerProcess) -> str:
    user = await acreate_user(srv.database_url, {unique("view"): "viewer"})
    return await _login(srv, user, PASSWORD)


async def _owner(srv: ServerProcess) -> tuple[str, str]:
    user = await acreate_user(srv.database_url, {unique("own"): "owner"})
    return user, await _login(srv, user, PASSWORD)


@ON_SQLITE
@pytest.mark.parametrize(
    ("who", "pkg_id", "data", "error", "needle"),
    [
        ("admin", 555, None, UnknownPkgId, "555"),
        ("admin", PkgID.TOKEN_CREATE, {"name": 5}, InvalidData, "role"),
        ("admin", PkgID.TOKEN_REVOKE, {"id": 2_000_000_000}, NotFound, "2000000000"),
        ("owner", PkgID.MEMBER_ADD, {"username": "<self>", "role": "viewer"}, Conflict, "already a member"),
        ("viewer", PkgID.TOKEN_CREATE, {"name": "x", "role": "viewer"}, PermissionDenied, ""),
        ("admin", PkgID.AUTH_REFRESH, {"token": "garbage"}, Unauthenticated, "refresh refused"),
    ],
)
async def test_each_error_status_raises_its_class(
    server: ServerProcess,
    admin: str,
    who: str,
    pkg_id: int,
    data: dict[str, Any] | None,
    error: type[WatchpostError],
    needle: str,
) -> None:
    token = admin
    if who == "viewer":
        token = await _viewer_token(server)
    elif who == "owner":
        user, token = await _owner(server)
        data = {**(data or {}), "username": user}
    async with WatchpostClient(server.ws_url, token) as client:
        with pytest.raises(error) as caught:
            await client.call(pkg_id, data)
        exc = caught.value
        assert type(exc) is error and exc.status_code == error.status_code
        assert exc.msg and needle in str(exc)
        assert isinstance(exc.data, dict) and exc.data["msg"] == exc.msg
        if error is InvalidData:
            assert {e["path"] for e in exc.errors} >= {"name"}
        assert (await client.ping())["pong"] is True  # an error answer never hurts the connection


async def test_rate_limited_carries_retry_after(strict_server: ServerProcess) -> None:
    user = await acreate_user(strict_server.database_url, {unique("rl"): "viewer"})
    token = await _login(strict_server, user, PASSWORD)
    async with WatchpostClient(strict_server.ws_url, token) as client:
        with pytest.raises(RateLimited) as caught:
            for _ in range(20):  # the connect PING took one of the 10
                await client.ping()
        assert caught.value.status_code == RSPCode.RATE_LIMITED
        assert caught.value.retry_after_ms is not None and caught.value.retry_after_ms > 0
        assert "rate limit" in caught.value.msg
        assert client.connected  # the connection stays open


async def test_server_deadline_raises_timeout(timeout_server: ServerProcess) -> None:
    token = await _login(timeout_server)
    async with WatchpostClient(timeout_server.ws_url, token) as client:
        with pytest.raises(Timeout) as caught:
            await client.call(PkgID.TOKEN_LIST)  # reads the database: cannot finish in 1 µs
        assert caught.value.status_code == RSPCode.TIMEOUT and "longer than" in caught.value.msg


@ON_SQLITE
async def test_client_timeout_drops_the_late_answer(server: ServerProcess, admin: str) -> None:
    async with WatchpostClient(server.ws_url, admin, request_timeout=0.0) as client:
        with pytest.raises(RequestTimeout) as caught:
            await client.call(PkgID.WHOAMI)
        assert isinstance(caught.value, TimeoutError)
        # The WHOAMI answer arrives later and must not be taken for the PING's.
        for _ in range(3):
            assert (await client.call(PkgID.PING, timeout=10))["pong"] is True


@ON_SQLITE
async def test_call_in_flight_fails_with_connection_lost_then_reconnects(
    server: ServerProcess, admin: str
) -> None:
    async with WatchpostClient(server.ws_url, admin, backoff_min=0.05, backoff_max=0.5) as client:
        with pytest.raises(ConnectionLost) as caught:
            # Over the 64 KiB frame limit: the server closes 1009 while the call waits.
            await client.call(PkgID.PING, {"pad": "x" * 70_000})
        assert caught.value.close_code == CloseCode.MESSAGE_TOO_BIG
        assert "1009" in str(caught.value)
        assert (await client.ping())["pong"] is True  # waited for the automatic reconnect
        assert client.connects == 2


@ON_SQLITE
async def test_on_open_replaces_the_ping_and_on_event_gets_unclaimed_topics(server: ServerProcess) -> None:
    """The hooks a probe needs: its own first call on every (re)connect, before any other call,
    and the events of a topic it did not subscribe through the client."""
    _, token = await _owner(server)
    opened: list[str] = []
    unclaimed: list[Event] = []

    async def on_open(caller: Any) -> None:
        me = await caller.call(PkgID.WHOAMI)
        # The topic is attached here, on this socket, not through client.subscribe().
        await caller.call(PkgID.SUBSCRIBE, {"topics": ["monitors"]})
        opened.append(me["user"])

    async with WatchpostClient(
        server.ws_url, token, on_open=on_open, on_event=unclaimed.append, backoff_min=0.05, backoff_max=0.5
    ) as client:
        assert len(opened) == 1 and client.connects == 1
        created = await client.call(PkgID.MONITOR_CREATE, {"name": unique("hook"), "kind": "push"})
        for _ in range(100):
            if unclaimed:
                break
            await asyncio.sleep(0.05)
        assert [(e.topic, e.pkg_id, e.data["monitor"]["id"]) for e in unclaimed] == [
            ("monitors", PkgID.EVENT_MONITOR_CHANGED, created["id"])
        ]
        with pytest.raises(ConnectionLost):
            await client.call(PkgID.PING, {"pad": "x" * 70_000})  # the server closes 1009
        await client.call(PkgID.MONITOR_DELETE, {"id": created["id"]})  # waits for the reconnect and its hook
        assert len(opened) == 2 and client.connects == 2
        for _ in range(100):
            if len(unclaimed) == 2:
                break
            await asyncio.sleep(0.05)
        assert unclaimed[-1].data == {"action": "deleted", "monitor": {"id": created["id"]}}


# ----- authentication


@ON_SQLITE
async def test_bad_token_and_wrong_tenant_raise_authentication_failed(server: ServerProcess) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        await WatchpostClient(server.ws_url, "garbage").connect()
    assert caught.value.close_code == CloseCode.AUTH_FAILED
    _, token = await _owner(server)
    with pytest.raises(AuthenticationFailed) as caught:
        await WatchpostClient(server.ws_url, token, tenant="default").connect()
    assert caught.value.close_code == CloseCode.NOT_A_MEMBER


@ON_SQLITE
async def test_token_provider_supplies_the_first_token(server: ServerProcess) -> None:
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        return await _login(server)

    async with WatchpostClient(server.ws_url, token_provider=provider) as client:
        assert (await client.whoami())["user"] == "admin"
    assert calls == 1


async def test_token_refreshed_in_band_or_connection_ends_with_4010(
    strict_server: ServerProcess,
) -> None:
    srv = strict_server
    provided = 0

    async def provider() -> str:
        nonlocal provided
        provided += 1
        return await _login(srv)

    refreshing = WatchpostClient(srv.ws_url, await _login(srv), token_provider=provider)
    lapsing = WatchpostClient(srv.ws_url, await _login(srv), reconnect=True)
    async with refreshing, lapsing:
        started = time.monotonic()
        async with lapsing.subscribe(["monitors"]) as events:
            # No token_provider: the server's 4010 at expiry ends the client for good.
            with pytest.raises(AuthenticationFailed) as caught:
                await _next(events, 30)
        assert caught.value.close_code == CloseCode.TOKEN_EXPIRED
        with pytest.raises(AuthenticationFailed):
            await lapsing.ping()
        # 904 comes 2 s after each token is minted; AUTH_REFRESH must keep this socket open past
        # the first token's 6 s (3 refreshes at most, so the 10 messages a minute suffice).
        await asyncio.sleep(max(0.0, started + 7.0 - time.monotonic()))
        assert provided >= 1
        assert (await refreshing.whoami())["user"] == "admin"
        assert refreshing.connects == 1  # refreshed in-band, never reconnected


# ----- subscriptions, reconnect and recovery


async def test_subscription_survives_restarts_without_loss_or_duplicates(
    redis_server: ServerProcess, redis_url: str
) -> None:
    srv = redis_server
    token = await _login(srv)
    async with (
        _publisher(srv, redis_url) as broker,
        # The provider fails while the server is down (its login endpoint too): not fatal.
        WatchpostClient(
            srv.ws_url, token, token_provider=lambda: _login(srv), backoff_min=0.1, backoff_max=1.0
        ) as client,
    ):
        tenant_id = (await client.whoami())["tenant_id"]
        base = await _publish(broker, tenant_id, 0)  # seqs continue across tests sharing the topic
        async with client.subscribe(["monitors"]) as lagging, client.subscribe(["monitors"]) as keen:
            for n in (1, 2, 3):
                await _publish(broker, tenant_id, n)
            got = [await _next(lagging)]
            seen = [await _next(keen) for _ in range(3)]
            # Events 2 and 3 have reached the client (``keen`` has them) but still sit unread in
            # ``lagging``, so its resubscribe asks for them again: the copies must be dropped.

            # The server dies; 3 events are published meanwhile (history holds 5): replayed.
            await asyncio.to_thread(srv.kill)
            for n in (4, 5, 6):
                await _publish(broker, tenant_id, n)
            await asyncio.to_thread(srv.start)
            got += [await _next(lagging) for _ in range(5)]
            seen += [await _next(keen) for _ in range(3)]
            for n in (7, 8):  # live again after the replay
                await _publish(broker, tenant_id, n)
            got += [await _next(lagging) for _ in range(2)]
            seen += [await _next(keen) for _ in range(2)]
            for items in (got, seen):
                assert all(isinstance(e, Event) for e in items), items
                assert [e.seq for e in items if isinstance(e, Event)] == list(range(base + 1, base + 9))
                assert [e.data["n"] for e in items if isinstance(e, Event)] == list(range(1, 9))
                assert {e.pkg_id for e in items if isinstance(e, Event)} == {PkgID.EVENT_MONITOR_CHANGED}
            assert client.connects == 2
            with pytest.raises(TimeoutError):  # and nothing more: no duplicate at the end either
                await _next(lagging, 0.5)
            last_seen = lagging.last_seq["monitors"]
        assert last_seen == base + 8

        # More events than the history holds go by unseen: resuming from ``last_seen`` gives a Resync.
        for n in range(9, 9 + _HISTORY + 3):
            last = await _publish(broker, tenant_id, n)
        async with client.subscribe(["monitors"], since={"monitors": last_seen}) as events:
            assert await _next(events) == Resync("monitors", last, "not_recovered")
            await _publish(broker, tenant_id, 99)
            after = await _next(events)
            assert isinstance(after, Event) and after.seq == last + 1 and after.data == {"n": 99}


@ON_SQLITE
async def test_domain_events_reach_a_subscription_while_calls_run(server: ServerProcess) -> None:
    _, token = await _owner(server)  # a tenant of its own: nobody else publishes there
    async with WatchpostClient(server.ws_url, token) as client, client.subscribe(["monitors"]) as events:
        created = await client.call(PkgID.MONITOR_CREATE, {"name": unique("beat"), "kind": "push"})
        paused = await client.call(PkgID.MONITOR_PAUSE, {"id": created["id"]})
        await client.call(PkgID.MONITOR_DELETE, {"id": created["id"]})
        items = []
        while len(items) < 3 or items[-1].data.get("action") != "deleted":
            item = await _next(events)
            assert isinstance(item, Event), item
            items.append(item)
    changed = [e.data for e in items if e.pkg_id == PkgID.EVENT_MONITOR_CHANGED]
    assert changed[0]["action"] == "created"
    assert {k: changed[0]["monitor"][k] for k in ("id", "name", "kind")} == {
        k: created[k] for k in ("id", "name", "kind")
    }
    assert changed[-1] == {"action": "deleted", "monitor": {"id": created["id"]}}
    assert paused["state"] == "paused"
    seqs = [e.seq for e in items]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one topic, no gaps


async def test_subscribing_to_a_forbidden_topic_raises(redis_server: ServerProcess) -> None:
    token = await _login(redis_server)
    async with WatchpostClient(redis_server.ws_url, token) as client:
        with pytest.raises(InvalidData, match="unknown topic"):
            async with client.subscribe(["no-such-topic"]):
                pass
        assert (await client.ping())["pong"] is True


@ON_SQLITE
async def test_losing_a_topic_ends_the_subscriptions_holding_it(server: ServerProcess) -> None:
    """A topic the role may no longer read ends the subscriptions holding it, whether the role
    was lowered out of band (seen at AUTH_REFRESH) or by MEMBER_UPDATE (EVENT_ROLE_CHANGED);
    a subscription of topics the role still reads goes on."""
    tenant = unique("t")
    owner = await acreate_user(server.database_url, {tenant: "owner"})
    member = await acreate_user(server.database_url, {tenant: "editor"})
    async with (
        WatchpostClient(server.ws_url, await _login(server, owner, PASSWORD)) as boss,
        WatchpostClient(server.ws_url, await _login(server, member, PASSWORD)) as client,
        client.subscribe(["deliveries", "monitors"]) as both,
        client.subscribe(["monitors"]) as viewers,
    ):
        user_id = (await client.whoami())["user_id"]
        await aset_role(server.database_url, member, tenant, "viewer")  # no socket is told
        answer = await client.refresh(await _login(server, member, PASSWORD))
        assert answer["dropped_topics"] == ["deliveries"]
        with pytest.raises(PermissionDenied, match="deliveries") as caught:
            await _next(both, 5)
        assert caught.value.data == {"dropped_topics": ["deliveries"]}
        assert caught.value.pkg_id == PkgID.AUTH_REFRESH

        await boss.call(PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "editor"})
        await _eventually(lambda: client.whoami(), lambda me: me["roles"] == ["editor"])
        async with client.subscribe(["deliveries"]) as again:
            await boss.call(PkgID.MEMBER_UPDATE, {"user_id": user_id, "role": "viewer"})
            with pytest.raises(PermissionDenied, match="deliveries") as caught:
                await _next(again, 5)
            assert caught.value.pkg_id == PkgID.EVENT_ROLE_CHANGED

        # The other subscription still gets monitor events.
        created = await boss.call(PkgID.MONITOR_CREATE, {"name": unique("beat"), "kind": "push"})
        item = await _next(viewers)
        assert isinstance(item, Event) and item.topic == "monitors"
        assert item.data["action"] == "created" and item.data["monitor"]["id"] == created["id"]


async def _eventually(get: Any, done: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not done(await get()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# ----- CLI


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``python -m app.client`` with only the WATCHPOST_* variables given in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WATCHPOST_")}
    proc = subprocess.run(
        [sys.executable, "-m", "app.client", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return proc.returncode, proc.stdout, proc.stderr


@ON_SQLITE
async def test_cli_login_call_and_errors(server: ServerProcess) -> None:
    url = ["--url", server.ws_url]
    code, out, err = await asyncio.to_thread(
        _cli, "login", "--base", server.http_url, "--username", "admin", "--password", ADMIN_PASSWORD
    )
    assert code == 0, err
    token = out.strip()
    code, out, err = await asyncio.to_thread(
        _cli, "call", "WHOAMI", "{}", *url, env={"WATCHPOST_TOKEN": token}
    )
    assert code == 0, err
    assert json.loads(out)["user"] == "admin"
    code, out, err = await asyncio.to_thread(
        _cli, "call", "102", '{"page": 1}', *url, "--token", token, "--meta"
    )
    assert code == 1 or json.loads(out)["meta"]["page"] == 1  # 102 exists once monitoring is registered
    code, out, err = await asyncio.to_thread(_cli, "call", "555", *url, "--token", token)
    assert code == 1 and "UNKNOWN_PKG_ID (6)" in err and out == ""
    code, out, err = await asyncio.to_thread(_cli, "call", "1", "{oops", *url, "--token", token)
    assert code == 2 and "not valid JSON" in err
    code, out, err = await asyncio.to_thread(_cli, "call", "1", *url, "--token", "garbage")
    assert code == 3 and "4001" in err
    code, out, err = await asyncio.to_thread(
        _cli, "login", "--base", server.http_url, "--username", "admin", "--password", "wrong"
    )
    assert code == 1 and "401" in err


async def test_cli_subscribe_prints_json_lines(redis_server: ServerProcess, redis_url: str) -> None:
    srv = redis_server
    token = await _login(srv)
    async with WatchpostClient(srv.ws_url, token) as client:
        tenant_id = (await client.whoami())["tenant_id"]
    async with _publisher(srv, redis_url) as broker:
        seq = await _publish(broker, tenant_id, 41)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.client",
            "subscribe",
            "monitors",
            "--since",
            f"monitors={seq - 1}",
            "--url",
            srv.ws_url,
            "--token",
            token,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert line == {"topic": "monitors", "seq": seq, "pkg_id": 902, "data": {"n": 41}}
            await _publish(broker, tenant_id, 42)
            line = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
            assert line["seq"] == seq + 1 and line["data"] == {"n": 42}
        finally:
            proc.send_signal(signal.SIGINT)
            code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 0
