"""What the bench measures: the bare echo reference and Watchpost itself, behind one small interface.

A target starts its server process(es), opens connections ready for a
scenario, makes one event happen for fanout, and reports the servers' CPU time
and memory. Scenarios only talk to this interface, so every figure is measured
the same way for both.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

from app.bench.fanout import Publish
from app.bench.loadgen import close_all, open_connections, request_all
from app.bench.servers import CpuPlan, ServerProcess, free_port, python_module, scrubbed_env
from app.bench.wsclient import BenchConnection

#: "rpc": connections for request loops; "listen": connections that may subscribe (fanout, idle).
Purpose = Literal["rpc", "listen"]

_launch_counter = itertools.count(1)


@dataclass(frozen=True)
class Environment:
    """Where servers run and what they may use; one per bench run."""

    cpus: CpuPlan
    log_dir: Path
    #: libpq URL of a PostgreSQL database used to create and drop the scratch database.
    postgres_admin_url: str
    redis_url: str


class Target(abc.ABC):
    """A server under test; ``start`` before use and ``stop`` afterwards."""

    name: str
    #: pkg_id and topic of the fanout event subscribers wait for.
    event_pkg_id: int = 902
    event_topic: str | None = "monitors"

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.servers: list[ServerProcess] = []

    @abc.abstractmethod
    async def start(self, instances: int = 1) -> None:
        """Start ``instances`` server processes on the server CPUs and wait until they serve."""

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop()
        self.servers.clear()

    @abc.abstractmethod
    def frames(self, operation: str) -> list[tuple[bytes, bytes]]:
        """Request frames of ``operation`` split around their req_id (prefix, suffix).

        Connection ``i`` sends ``frames[i % len(frames)]``.
        """

    @abc.abstractmethod
    async def open(self, count: int, purpose: Purpose, instance: int = 0) -> list[BenchConnection]:
        """``count`` open, usable (for Watchpost: authenticated) connections to server ``instance``."""

    @abc.abstractmethod
    async def subscribe(self, connections: Sequence[BenchConnection]) -> None:
        """Subscribe ``listen`` connections to the fanout topic; returns once every one is subscribed."""

    @abc.abstractmethod
    async def publisher(self, instance: int = 0) -> tuple[Publish, Sequence[BenchConnection]]:
        """A function making the server publish one event, and the connections to close afterwards."""

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by every server process of this target."""
        return sum(server.cpu_seconds() for server in self.servers)

    def rss_bytes(self, instance: int = 0) -> int:
        return self.servers[instance].rss_bytes()

    def _spawn(self, argv: list[str], env: dict[str, str]) -> ServerProcess:
        label = f"{self.name}-{next(_launch_counter)}"
        return ServerProcess(label, argv, env, self.env.cpus.server_cpus, self.env.log_dir / f"{label}.log")


def split_frame(envelope: dict[str, object]) -> tuple[bytes, bytes]:
    """Encode ``envelope`` (whose req_id is the placeholder ``@@``) and split it at the placeholder."""
    encoded = orjson.dumps({**envelope, "req_id": "@@"})
    prefix, suffix = encoded.split(b'"@@"')
    return prefix + b'"', b'"' + suffix


class EchoTarget(Target):
    """The bare uvicorn + Starlette echo (``app.bench.echo``)."""

    name = "echo"

    def __init__(self, env: Environment) -> None:
        super().__init__(env)
        self.ports: list[int] = []

    async def start(self, instances: int = 1) -> None:
        for _ in range(instances):
            port = free_port()
            server = self._spawn(python_module("app.bench.echo", "--port", str(port)), scrubbed_env())
            self.servers.append(server)
            self.ports.append(port)
            await server.wait_http_ok(f"http://127.0.0.1:{port}/health")

    def frames(self, operation: str) -> list[tuple[bytes, bytes]]:
        # The echo returns the PING envelope itself, so the client parses the same
        # kind of frame for both targets.
        return [split_frame({"pkg_id": 1, "status_code": 0, "data": {}})]

    async def open(self, count: int, purpose: Purpose, instance: int = 0) -> list[BenchConnection]:
        path = "/fanout" if purpose == "listen" else "/echo"
        return await open_connections(f"ws://127.0.0.1:{self.ports[instance]}{path}", count)

    async def subscribe(self, connections: Sequence[BenchConnection]) -> None:
        for reply in await request_all(connections, 4, {"topics": [self.event_topic]}):
            if reply.get("pkg_id") != 4:
                raise RuntimeError(f"echo did not confirm the subscription: {reply}")

    async def publisher(self, instance: int = 0) -> tuple[Publish, Sequence[BenchConnection]]:
        (ws,) = await open_connections(f"ws://127.0.0.1:{self.ports[instance]}/fanout", 1)

        async def publish(number: int) -> None:
            event = {"pkg_id": self.event_pkg_id, "req_id": None, "status_code": 0, "topic": self.event_topic}
            ws.send(orjson.dumps({**event, "seq": number, "data": {"round": number}}))

        return publish, [ws]

    async def stop(self) -> None:
        await super().stop()
        self.ports.clear()


__all__ = ["EchoTarget", "Environment", "Target", "close_all", "split_frame"]
