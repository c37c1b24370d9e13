"""Controllable HTTP and TCP targets on loopback, for monitoring tests.

Each target runs its own asyncio loop in a daemon thread, so it keeps serving
while the test's loop is busy (or blocked in a synchronous client) and while a
server subprocess polls it. Tests change behaviour at any time with plain
method calls; hits are counted per path so a test can prove a check ran
exactly once.

    with HttpTarget() as target:
        target.respond("/health", status=500)
        target.hang("/slow")          # accept, never answer
        target.drop("/reset")         # close the connection without a response
        url = target.url("/health")
        target.hits("/health")        # how many requests arrived

    with TcpTarget() as tcp:
        tcp.refuse()                  # stop listening: connects are refused
        tcp.accept()                  # listen again on the same port
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import tempfile
import threading
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self

Mode = Literal["respond", "hang", "drop"]


@dataclass
class _Behaviour:
    mode: Mode = "respond"
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


class _LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _cancel_rest() -> None:
            current = asyncio.current_task()
            # Repeat: a connection accepted during the first pass starts a new handler.
            for _ in range(5):
                tasks = [t for t in asyncio.all_tasks() if t is not current]
                if not tasks:
                    break
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # let closed transports release their sockets

        self.run(_cancel_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_self_signed_cert(directory: Path, days: int = 30) -> tuple[Path, Path, dt.datetime]:
    """Write a self-signed cert for 127.0.0.1/localhost; returns (cert, key, not_after)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    not_after = now + dt.timedelta(days=days)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path, not_after


class HttpTarget:
    """A minimal HTTP/1.1 server; every response closes its connection.

    Unknown paths answer 200 "ok". ``tls=True`` serves HTTPS with a fresh
    self-signed certificate whose expiry is ``cert_not_after``.
    """

    def __init__(self, *, tls: bool = False, cert_days: int = 30) -> None:
        self._behaviours: dict[str, _Behaviour] = {}
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._tls = tls
        self._cert_days = cert_days
        self.cert_not_after: dt.datetime | None = None
        self.port = 0
        self._loop: _LoopThread | None = None
        self._server: asyncio.Server | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Self:
        ssl_ctx = None
        if self._tls:
            self._tmp = tempfile.TemporaryDirectory()
            cert, key, self.cert_not_after = make_self_signed_cert(Path(self._tmp.name), self._cert_days)
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(cert, key)
        self._loop = _LoopThread()

        async def _start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_ctx)

        self._server = self._loop.run(_start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        server = self._server

        async def _close() -> None:
            if server is not None:
                server.close()

        self._loop.run(_close())
        self._loop.stop()
        self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- control ---------------------------------------------------------------------------
    def url(self, path: str = "/") -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def respond(
        self, path: str, status: int = 200, body: bytes | str = b"ok", headers: dict[str, str] | None = None
    ) -> None:
        """Answer ``path`` with this status and body from now on."""
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._behaviours[path] = _Behaviour("respond", status, raw, dict(headers or {}))

    def hang(self, path: str) -> None:
        """Read the request on ``path`` and never answer (the client must time out)."""
        with self._lock:
            self._behaviours[path] = _Behaviour("hang")

    def drop(self, path: str) -> None:
        """Close the connection on ``path`` without sending anything."""
        with self._lock:
            self._behaviours[path] = _Behaviour("drop")

    def hits(self, path: str) -> int:
        with self._lock:
            return self._hits[path]

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()

    # -- serving ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ssl.SSLError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        path = parts[1].split("?", 1)[0] if len(parts) > 1 else "/"
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip() or 0)
        if length:
            try:
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                writer.close()
                return
        with self._lock:
            self._hits[path] += 1
            behaviour = self._behaviours.get(path, _Behaviour())
        try:
            if behaviour.mode == "hang":
                await asyncio.Event().wait()  # cancelled when the target stops
            if behaviour.mode == "respond":
                headers = {
                    "Content-Length": str(len(behaviour.body)),
                    "Content-Type": "text/plain",
                    "Connection": "close",
                    **behaviour.headers,
                }
                out = f"HTTP/1.1 {behaviour.status} X\r\n" + "".join(
                    f"{k}: {v}\r\n" for k, v in headers.items()
                )
                writer.write(out.encode("latin-1") + b"\r\n" + behaviour.body)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


class TcpTarget:
    """A TCP listener that accepts (and immediately closes) or refuses on demand.

    Refusing closes the listening socket, so connects get ECONNREFUSED; accepting
    again re-binds the same port. ``connections`` counts accepted connections.
    """

    def __init__(self) -> None:
        self.port = _free_port()
        self.connections = 0
        self._loop: _LoopThread | None = None
        self._server: asyncio.Server | None = None

    def start(self) -> Self:
        self._loop = _LoopThread()
        self.accept()
        return self

    def accept(self) -> None:
        assert self._loop is not None, "start() the target first"
        if self._server is not None:
            return

        async def _start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

        self._server = self._loop.run(_start())

    def refuse(self) -> None:
        assert self._loop is not None, "start() the target first"
        server, self._server = self._server, None
        if server is None:
            return

        async def _close() -> None:
            server.close()
            await server.wait_closed()

        self._loop.run(_close())

    def stop(self) -> None:
        if self._loop is None:
            return
        self.refuse()
        self._loop.stop()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()
