"""A minimal HTTP/1.1 target for the collector bench: ``python -m app.bench.http_target --port P``.

It answers every request after ``--delay-ms`` (default 0) with ``200 ok`` and
closes the connection (the collector opens a fresh one per check). For each
request it keeps the arrival time (wall clock) and its own answer time (from the
request line read to the response written), so the bench can compare the
latency Watchpost records with the target's true answer time, and each check's
start with its due time. ``GET /__stats`` returns and clears what was kept.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


class Target:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        #: (path, arrival wall-clock seconds, answer time in ms)
        self.hits: list[tuple[str, float, float]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            arrived, started = time.time(), time.perf_counter()
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.split()
            path = parts[1].decode("latin-1") if len(parts) > 1 else "/"
            if path == "/__stats":
                body = orjson.dumps(self.hits)
                self.hits = []
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            else:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(_RESPONSE)
                self.hits.append((path, arrived, (time.perf_counter() - started) * 1000))
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


async def serve(port: int, delay_s: float) -> None:
    target = Target(delay_s)
    server = await asyncio.start_server(target.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
