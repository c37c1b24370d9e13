"""The reference server: a bare uvicorn + Starlette WebSocket echo.

Every bench figure is also given as a ratio to this app measured the same way
on the same machine, so results stay comparable across machines. It does the
least a WebSocket server can: ``/echo`` returns each text frame as is, and
``/fanout`` sends each text frame it receives to every subscribed socket (the
reference for broadcast; a frame starting with ``{"pkg_id":4,`` subscribes its
sender and is echoed as the reply). No parsing, no auth, no routing.

Run it with ``python -m app.bench.echo --port 8100``.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def _echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


#: How a SUBSCRIBE envelope (pkg_id 4) encoded by orjson begins.
SUBSCRIBE_PREFIX = '{"pkg_id":4,'


def _make_fanout() -> WebSocketRoute:
    members: set[WebSocket] = set()

    async def fanout(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                if text.startswith(SUBSCRIBE_PREFIX):
                    # The one control message: join the broadcast and echo it as the reply.
                    members.add(websocket)
                    await websocket.send_text(text)
                    continue
                for member in list(members):
                    if member is not websocket:
                        await member.send_text(text)
        except WebSocketDisconnect:
            pass
        finally:
            members.discard(websocket)

    return WebSocketRoute("/fanout", fanout)


async def _health(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_echo_app() -> Starlette:
    """A fresh echo app (its fanout member set belongs to this app only)."""
    return Starlette(
        routes=[Route("/health", _health), WebSocketRoute("/echo", _echo), _make_fanout()],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Bare uvicorn + Starlette WebSocket echo (bench reference).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    # The uvicorn options `python -m app serve` uses with default settings (64 KiB
    # frames, pings every 25 s, no permessage-deflate, no access log), and the
    # same default event loop and WebSocket implementation.
    uvicorn.run(
        create_echo_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ws_max_size=64 * 1024,
        ws_ping_interval=25.0,
        ws_ping_timeout=10.0,
        ws_per_message_deflate=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()
