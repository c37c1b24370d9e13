"""Processes and services the bench owns: server subprocesses pinned to a CPU, a scratch database, Redis keys.

Servers run as separate processes (``taskset`` pins them) so their CPU time
and memory can be read from ``/proc/<pid>`` and never mix with the load
generator's, which pins itself to another CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis.asyncio as aioredis

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

#: The repository root: servers run from here so ``python -m app`` finds actions.json and migrations.
ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the servers get and which one the load generator keeps."""

    server_cpus: frozenset[int]
    client_cpus: frozenset[int]
    note: str

    @classmethod
    def choose(cls, pin: bool = True) -> CpuPlan:
        """Servers on the first allowed CPU, the load generator on the second (when there are two)."""
        allowed = sorted(os.sched_getaffinity(0))
        if not pin or len(allowed) < 2:
            why = "pinning disabled" if not pin else f"only {len(allowed)} CPU available"
            every = frozenset(allowed)
            return cls(every, every, f"{why}: servers and load generator share CPUs {sorted(every)}")
        server, client = frozenset(allowed[:1]), frozenset(allowed[1:2])
        return cls(server, client, f"servers on CPU {allowed[0]}, load generator on CPU {allowed[1]}")

    def pin_self(self) -> None:
        """Move this process (the load generator) onto its CPU; servers are pinned by taskset."""
        os.sched_setaffinity(0, self.client_cpus)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One server subprocess; ``stop`` it (or use ``async with``) when done."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cpus: frozenset[int], log_path: Path):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = log_path.open("ab")
        command = argv
        taskset = shutil.which("taskset")
        if cpus and taskset:
            # taskset execs the server, so its pid is the server's pid.
            command = [taskset, "-c", ",".join(str(c) for c in sorted(cpus)), *argv]
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        if cpus and not taskset:
            os.sched_setaffinity(self.proc.pid, cpus)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_bytes(self) -> int:
        """Resident memory now, from ``/proc/<pid>/status`` (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"{self.name} (pid {self.pid}) has no VmRSS; did it exit?")

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread so far, from ``/proc/<pid>/stat``."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    async def wait_http_ok(self, url: str, within_s: float = 60.0) -> None:
        """Poll ``url`` until it answers 200; raise with the log's tail if the server dies or is late."""
        deadline = asyncio.get_running_loop().time() + within_s
        async with httpx.AsyncClient(trust_env=False, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError(
                        f"{self.name} not ready at {url} after {within_s:.0f} s:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    async def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM (graceful drain), then SIGKILL after ``grace_s`` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            for _ in range(int(grace_s * 10)):
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        self._log.close()


def python_module(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def scrubbed_env(**values: str) -> dict[str, str]:
    """This process's environment minus proxy settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(values)
    return env


class ScratchDatabase:
    """A PostgreSQL database created for one bench run and dropped (with FORCE) afterwards."""

    def __init__(self, admin_url: str):
        #: libpq-style URL of a database to connect to for CREATE/DROP DATABASE.
        self.admin_url = admin_url
        self.name = f"watchpost_bench_{uuid.uuid4().hex[:10]}"

    @property
    def url(self) -> str:
        """SQLAlchemy asyncpg URL of the scratch database (for DATABASE_URL)."""
        parts = urlsplit(self.admin_url)
        url = urlunsplit(parts._replace(path="/" + self.name))
        return url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def create(self) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()

    async def drop(self) -> None:
        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()


async def delete_redis_prefix(redis_url: str, prefix: str) -> int:
    """Remove every key under ``prefix`` (the bench's own); returns how many."""
    client = aioredis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.delete(*batch)
                batch.clear()
        if batch:
            deleted += await client.delete(*batch)
    finally:
        await client.aclose()
    return deleted
