"""Start real Watchpost servers (``python -m app serve`` subprocesses) for tests.

    srv = ServerProcess(database_url, env={"RATE_LIMIT_ENABLED": "false"})
    srv.start()                      # migrates, spawns uvicorn, waits for /health
    token = srv.login("admin", ADMIN_PASSWORD)
    async with ws_connect(srv, token) as ws: ...
    srv.stop()                       # SIGTERM, wait; srv.kill() for SIGKILL

Each server gets a free loopback port, its own log file (``srv.log_text()``)
and the environment it is given plus safe test defaults.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parent.parent
ADMIN_PASSWORD = "admin-test-password"
JWT_SECRET = "test-secret-" + "x" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sqlite_url() -> str:
    path = Path(tempfile.mkdtemp(prefix="wptest-")) / "watchpost.db"
    return f"sqlite+aiosqlite:///{path}"


def migrate(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    subprocess.run(
        [sys.executable, "-m", "app", "migrate"], cwd=ROOT, env=env, check=True, capture_output=True
    )


class ServerProcess:
    def __init__(
        self,
        database_url: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.database_url = database_url
        #: Extra arguments of ``python -m app serve`` (e.g. ``["--role", "collector"]``).
        self.args = list(args or [])
        self.port = port or free_port()
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="wpserver-", suffix=".log")[1])
        self._migrated = False

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/web"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYCLOAK_", "REDIS_URL"))}
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "HOST": "127.0.0.1",
                "PORT": str(self.port),
                "ADMIN_USERNAME": "admin",
                "ADMIN_PASSWORD": ADMIN_PASSWORD,
                "JWT_SECRET": JWT_SECRET,
                "LOG_LEVEL": "INFO",
                "COLLECTOR_ENABLED": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> ServerProcess:
        if not self._migrated:
            migrate(self.database_url)
            self._migrated = True
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", *self.args],
                cwd=ROOT,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.http_url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    # ----- HTTP helpers
    def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        req = urllib.request.Request(
            self.http_url + path, data=data, headers={"content-type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.http_url + path, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def login(self, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
        status, body = self.post("/login", {"username": username, "password": password})
        assert status == 200, (status, body)
        return str(body["access_token"])


# ----- WebSocket helpers


@contextlib.asynccontextmanager
async def ws_connect(
    srv: ServerProcess | str, token: str | None = None, *, tenant: str | None = None, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    url = srv if isinstance(srv, str) else srv.ws_url
    if tenant:
        url += f"?tenant={tenant}"
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with connect(
        url,
        additional_headers=headers,
        subprotocols=["watchpost.v1"],
        open_timeout=10,
        max_size=2**24,
        **kwargs,
    ) as ws:  # type: ignore[list-item]
        yield ws


def new_req_id() -> str:
    return str(uuid.uuid4())


async def call(
    ws: ClientConnection, pkg_id: int, data: Any = None, *, timeout: float = 10.0
) -> dict[str, Any]:
    """Send one request and return its response, skipping events and other answers."""
    req_id = new_req_id()
    await ws.send(json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data if data is not None else {}}))
    return await wait_for_response(ws, req_id, timeout=timeout)


async def wait_for_response(
    ws: ClientConnection, req_id: str | None, *, timeout: float = 10.0
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg.get("req_id") == req_id and "topic" not in msg and (req_id or msg.get("pkg_id") != 904):
                return dict(msg)


async def call_many(
    ws: ClientConnection, requests: list[tuple[int, Any]], *, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Send every request at once (all in flight together); their responses in request order."""
    ids = [new_req_id() for _ in requests]
    for req_id, (pkg_id, data) in zip(ids, requests, strict=True):
        await ws.send(
            json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data if data is not None else {}})
        )
    replies: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(timeout):
        while len(replies) < len(ids):
            msg = json.loads(await ws.recv())
            if msg.get("req_id") in ids and "topic" not in msg:
                replies[msg["req_id"]] = msg
    return [replies[req_id] for req_id in ids]


async def ok(ws: ClientConnection, pkg_id: int, data: Any = None) -> Any:
    """Call and assert success; returns ``data``."""
    resp = await call(ws, pkg_id, data)
    assert resp["status_code"] == 0, resp
    return resp["data"]


async def expect_close(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    """Read until the server closes; returns the close code."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except websockets.ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    return None
