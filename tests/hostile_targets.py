"""Hostile targets on loopback for the monitoring hardening tests.

- :class:`Tarpit` accepts TCP connections and never answers (nor closes them).
- :class:`StreamTarget` answers every request with a body of ``size`` bytes generated on
  the fly (never held in memory), and remembers each request's head, so a test can see
  what a check sent (e.g. the Authorization header built from URL credentials).

Both run their own event loop in a daemon thread (see :mod:`tests.targets`).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Self

from tests.targets import _LoopThread


class Tarpit:
    def __init__(self) -> None:
        self.port = 0
        self.accepted = 0
        self._loop: _LoopThread | None = None
        self._server: asyncio.Server
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> Self:
        self._loop = _LoopThread()

        async def _start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)

        self._server = self._loop.run(_start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.run(self._close())
            self._loop.stop()
            self._loop = None

    async def _close(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # keep the socket open; never read, never answer
        await asyncio.Event().wait()


class StreamTarget:
    """HTTP/1.1: status 200, ``Content-Length: size``, the body streamed in 64 KiB chunks."""

    def __init__(self, size: int, fill: bytes = b"x") -> None:
        self.size = size
        self.chunk = (fill * (65536 // len(fill) + 1))[:65536]
        self.port = 0
        self.heads: list[str] = []
        self.sent = 0
        self._lock = threading.Lock()
        self._loop: _LoopThread | None = None
        self._server: asyncio.Server
        self._writers: list[asyncio.StreamWriter] = []

    def __enter__(self) -> Self:
        self._loop = _LoopThread()

        async def _start() -> asyncio.Server:
            return await asyncio.start_server(self._handle, "127.0.0.1", 0)

        self._server = self._loop.run(_start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.run(self._close())
            self._loop.stop()
            self._loop = None

    async def _close(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.close()

    def url(self, path: str = "/", userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self._writers.append(writer)
            head = await reader.readuntil(b"\r\n\r\n")
            with self._lock:
                self.heads.append(head.decode("latin-1"))
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {self.size}\r\n\r\n".encode()
            )
            left = self.size
            while left > 0:
                part = self.chunk[: min(left, len(self.chunk))]
                writer.write(part)
                await writer.drain()
                left -= len(part)
                with self._lock:
                    self.sent += len(part)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
