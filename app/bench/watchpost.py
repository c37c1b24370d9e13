"""Watchpost as a bench target: real ``python -m app serve`` processes on PostgreSQL and Redis.

``start`` creates a scratch PostgreSQL database, migrates it, and starts the
server(s) with a bootstrap admin, the Redis broker and limiter under a key
prefix of their own, then logs in once and creates one push monitor (push
monitors are never polled, so no collector work runs beside the measurement).
``stop`` stops the servers, drops the database and deletes the Redis keys.

Settings that differ from production defaults, and why (also written into
the results file): the collector and delivery workers are off (no monitors to
poll; their work would be noise), the per-user connection cap is raised (one
bench user holds thousands of sockets), and the per-user message rate is
raised so the rate limiter still runs on every message but never refuses one.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import uuid
from collections.abc import Sequence
from typing import Any

import httpx
import jwt

from app.bench.fanout import Publish
from app.bench.loadgen import close_all, open_connections, request_all
from app.bench.servers import (
    ROOT,
    ScratchDatabase,
    delete_redis_prefix,
    free_port,
    python_module,
    scrubbed_env,
)
from app.bench.targets import Environment, Purpose, Target, split_frame
from app.bench.wsclient import BenchConnection, connect
from app.protocol import SUBPROTOCOL, PkgID

#: Server settings the bench changes from the defaults (see the module docstring).
BENCH_SETTINGS = {
    "COLLECTOR_ENABLED": "false",
    "DELIVERY_WORKERS_ENABLED": "false",
    "RATE_LIMIT_ENABLED": "true",
    "WS_MAX_CONNECTIONS_PER_USER": "100000",
    "WS_MESSAGE_RATE_LIMIT": "1000000000",
    "ACCESS_TOKEN_TTL": "7200",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "json",
    "ENVIRONMENT": "bench",
}


#: How many monitors MONITOR_GET reads cycle through (one per connection up to this many).
READ_MONITORS = 200


class WatchpostTarget(Target):
    name = "watchpost"
    event_pkg_id = int(PkgID.EVENT_MONITOR_CHANGED)
    event_topic = "monitors"

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.database = ScratchDatabase(env.postgres_admin_url)
        self.redis_prefix = f"wpbench:{uuid.uuid4().hex[:8]}:"
        self.admin_password = secrets.token_urlsafe(16)
        self.jwt_secret = secrets.token_urlsafe(48)
        self.ports: list[int] = []
        self.token = ""
        self.monitor_id: int | None = None
        #: MONITOR_GET reads spread over this many monitors (connection i reads monitor i mod n),
        #: so concurrent reads are of different rows, as in real use.
        self.read_monitor_ids: list[int] = []
        #: MONITOR_UPDATE must name the version it read (compare-and-set).
        self.monitor_version = 0
        self._database_created = False

    def server_env(self, port: int) -> dict[str, str]:
        return scrubbed_env(
            DATABASE_URL=self.database.url,
            REDIS_URL=self.env.redis_url,
            REDIS_PREFIX=self.redis_prefix,
            HOST="127.0.0.1",
            PORT=str(port),
            ADMIN_USERNAME="bench-admin",
            ADMIN_PASSWORD=self.admin_password,
            JWT_SECRET=self.jwt_secret,
            PYTHONUNBUFFERED="1",
            **BENCH_SETTINGS,
        )

    async def start(self, instances: int = 1) -> None:
        await self.database.create()
        self._database_created = True
        migrate = await asyncio.to_thread(
            subprocess.run,
            python_module("app", "migrate"),
            cwd=ROOT,
            env=self.server_env(0),
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migrations failed:\n{migrate.stdout}\n{migrate.stderr}")
        for index in range(instances):
            port = free_port()
            server = self._spawn(python_module("app", "serve"), self.server_env(port))
            self.servers.append(server)
            self.ports.append(port)
            # The first instance bootstraps the admin; start the rest after it.
            await server.wait_http_ok(f"http://127.0.0.1:{port}/health/ready")
            if index == 0:
                self.token = await self._login(port)
        await self._create_monitor()

    async def stop(self) -> None:
        await super().stop()
        self.ports.clear()
        if self._database_created:
            await self.database.drop()
            self._database_created = False
        await delete_redis_prefix(self.env.redis_url, self.redis_prefix)

    async def _login(self, port: int) -> str:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as client:
            reply = await client.post(
                f"http://127.0.0.1:{port}/login",
                json={"username": "bench-admin", "password": self.admin_password},
            )
        if reply.status_code != 200:
            raise RuntimeError(f"bench admin login failed: HTTP {reply.status_code} {reply.text[:300]}")
        token: str = reply.json()["access_token"]
        return token

    def _url(self, instance: int) -> str:
        return f"ws://127.0.0.1:{self.ports[instance]}/web"

    async def _connect(self, count: int, instance: int) -> list[BenchConnection]:
        return await open_connections(
            self._url(instance),
            count,
            headers={"Authorization": f"Bearer {self.token}"},
            subprotocols=[SUBPROTOCOL],
        )

    async def connect_one(self, token: str, instance: int = 0) -> BenchConnection:
        """One authenticated connection with ``token`` (a local JWT or an API token)."""
        return await connect(
            self._url(instance), headers={"Authorization": f"Bearer {token}"}, subprotocols=[SUBPROTOCOL]
        )

    def fresh_tokens(self, count: int) -> list[str]:
        """``count`` distinct access tokens of the bench login's session, as the server would sign them.

        A reconnect storm is of distinct credentials, none cached yet: these measure that path.
        """
        claims = jwt.decode(self.token, options={"verify_signature": False})
        return [
            jwt.encode({**claims, "jti": secrets.token_hex(8)}, self.jwt_secret, algorithm="HS256")
            for _ in range(count)
        ]

    async def create_api_token(self, name: str = "bench") -> str:
        """A new editor API token of the bench tenant (its secret)."""
        (ws,) = await self._connect(1, 0)
        try:
            reply = await ws.request(PkgID.TOKEN_CREATE, {"name": name, "role": "editor"})
            _expect_ok(reply, "TOKEN_CREATE")
            return str(reply["data"]["token"])
        finally:
            await ws.close()

    async def _create_monitor(self) -> None:
        (ws,) = await self._connect(1, 0)
        try:
            reply = await ws.request(
                PkgID.MONITOR_CREATE, {"name": "bench push monitor", "kind": "push", "interval": 300}
            )
            _expect_ok(reply, "MONITOR_CREATE")
            self.monitor_id = int(reply["data"]["id"])
            self.monitor_version = int(reply["data"]["version"])
            self.read_monitor_ids = [self.monitor_id]
        finally:
            await ws.close()

    async def _create_read_monitors(self, count: int) -> None:
        """Grow the monitors MONITOR_GET cycles through to ``count`` (at most READ_MONITORS)."""
        wanted = min(count, READ_MONITORS)
        if len(self.read_monitor_ids) >= wanted:
            return
        (ws,) = await self._connect(1, 0)
        try:
            for number in range(len(self.read_monitor_ids), wanted):
                reply = await ws.request(
                    PkgID.MONITOR_CREATE,
                    {
                        "name": f"bench http monitor {number}",
                        "kind": "http",
                        "url": f"https://bench-{number}.invalid/health",
                        "enabled": False,
                        "tags": ["bench"],
                    },
                )
                _expect_ok(reply, "MONITOR_CREATE")
                self.read_monitor_ids.append(int(reply["data"]["id"]))
        finally:
            await ws.close()

    def frames(self, operation: str) -> list[tuple[bytes, bytes]]:
        if operation == "ping":
            return [split_frame({"pkg_id": int(PkgID.PING), "data": {}})]
        if operation == "monitor_get":
            return [
                split_frame({"pkg_id": int(PkgID.MONITOR_GET), "data": {"id": monitor_id}})
                for monitor_id in self.read_monitor_ids
            ]
        raise ValueError(f"unknown operation {operation!r}; use ping or monitor_get")

    async def open(self, count: int, purpose: Purpose, instance: int = 0) -> list[BenchConnection]:
        if purpose == "rpc":
            await self._create_read_monitors(count)
        connections = await self._connect(count, instance)
        try:
            # Authentication failures close right after the handshake: a PING
            # proves each connection is really usable.
            for reply in await request_all(connections, PkgID.PING, {}):
                _expect_ok(reply, "PING")
        except BaseException:
            await close_all(connections)
            raise
        return connections

    async def subscribe(self, connections: Sequence[BenchConnection]) -> None:
        for reply in await request_all(connections, PkgID.SUBSCRIBE, {"topics": [self.event_topic]}):
            _expect_ok(reply, "SUBSCRIBE")

    async def publisher(self, instance: int = 0) -> tuple[Publish, Sequence[BenchConnection]]:
        (ws,) = await self._connect(1, instance)

        async def publish(number: int) -> None:
            # A real update: committed to PostgreSQL, then EVENT_MONITOR_CHANGED on
            # "monitors" through the broker. Round time includes that write.
            data = {"id": self.monitor_id, "version": self.monitor_version, "description": f"round {number}"}
            reply = await ws.request(PkgID.MONITOR_UPDATE, data)
            _expect_ok(reply, "MONITOR_UPDATE")
            self.monitor_version = int(reply["data"]["version"])

        return publish, [ws]

    def settings(self) -> dict[str, Any]:
        """What the results file records about this target's configuration."""
        return {
            "changed_from_defaults": BENCH_SETTINGS,
            "database": "PostgreSQL (scratch)",
            "broker": "Redis",
        }


def _expect_ok(reply: dict[str, Any], what: str) -> None:
    if reply.get("status_code") != 0:
        raise RuntimeError(f"{what} failed during bench setup: {reply}")
