"""Helpers for the realtime tests: servers wired to Redis, a Redis-side publisher, event readers.

Events are published the way another instance would: through
:class:`app.broker.redis.RedisBroker` on the same Redis and key prefix the
servers use, so they travel the real cross-instance path (Lua publish, stream
history, pub/sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection

from app.broker.redis import RedisBroker
from app.events import scoped
from app.protocol import PkgID
from tests.server import ServerProcess, free_port, new_req_id

#: Limits high enough that only the test that wants a limit meets one.
HIGH_LIMITS = {
    "WS_MESSAGE_RATE_LIMIT": "100000",
    "RATE_LIMIT_PER_MINUTE": "100000",
    "RATE_LIMIT_BURST": "10000",
    "WS_MAX_CONNECTIONS_PER_USER": "1000",
}

#: The default tenant (created at bootstrap, the admin's) has id 1 on a fresh database.
DEFAULT_TENANT_ID = 1


_migrated: set[str] = set()


def redis_server(database_url: str, redis_url: str, prefix: str, **env: str) -> ServerProcess:
    """A started server on ``database_url`` with the Redis broker and limiter under ``prefix``.

    A second server on the same database skips the migration step (it is already at head).
    """
    srv = ServerProcess(
        database_url, env={**HIGH_LIMITS, "REDIS_URL": redis_url, "REDIS_PREFIX": prefix, **env}
    )
    srv._migrated = database_url in _migrated
    srv.start()
    _migrated.add(database_url)
    return srv


@contextlib.contextmanager
def servers(*procs: ServerProcess) -> Iterator[None]:
    """Stop (SIGTERM, then SIGKILL) every server on the way out, even when the test failed."""
    try:
        yield
    finally:
        for srv in procs:
            srv.stop(timeout=15)


@contextlib.asynccontextmanager
async def publisher(redis_url: str, prefix: str, history_size: int = 300) -> AsyncIterator[Publisher]:
    broker = RedisBroker(redis_url, prefix=prefix, history_size=history_size)
    try:
        yield Publisher(broker)
    finally:
        await broker.close()


class Publisher:
    """Publishes tenant events into Redis exactly as a Watchpost instance does."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker

    async def publish(
        self, tenant_id: int, topic: str, data: Any, pkg_id: int = PkgID.EVENT_MONITOR_CHANGED
    ) -> int:
        return await self.broker.publish(scoped(tenant_id, topic), topic, pkg_id, data)


async def next_event(ws: ClientConnection, topic: str, timeout: float = 10.0) -> dict[str, Any]:
    """The next event on ``topic``, skipping responses and other topics."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("topic") == topic:
                return dict(msg)


async def events_until(ws: ClientConnection, topic: str, last_seq: int, timeout: float = 20.0) -> list[int]:
    """Seqs of ``topic`` events received until one with ``seq >= last_seq`` arrives."""
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < last_seq:
            msg = json.loads(await ws.recv())
            if msg.get("topic") == topic:
                seqs.append(int(msg["seq"]))
    return seqs


async def no_event(ws: ClientConnection, topic: str, wait: float = 1.0) -> None:
    """Assert nothing arrives on ``topic`` within ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            while True:
                msg = json.loads(await ws.recv())
                assert msg.get("topic") != topic, f"unexpected event {msg}"
    except TimeoutError:
        return


async def call_collect(
    ws: ClientConnection, pkg_id: int, data: Any, timeout: float = 10.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send one request; return its response and every event that arrived before it."""
    req_id = new_req_id()
    await ws.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}))
    before: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("req_id") == req_id:
                return dict(msg), before
            if "topic" in msg:
                before.append(dict(msg))


def rss_kib(pid: int) -> int:
    """Resident set size of a process from /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def ready(srv: ServerProcess) -> tuple[int, dict[str, Any]]:
    status, body = srv.get("/health/ready")
    return status, json.loads(body)


async def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> None:
    """Poll a (sync) predicate until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


class OwnRedis:
    """A throwaway redis-server on a free port, so a test can kill it mid-run."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> OwnRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import socket

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
