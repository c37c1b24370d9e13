"""The ``postgres`` and ``redis`` kinds: connect with a connection string and make one
trivial round trip (``SELECT 1``, ``PING``); latency is connect plus round trip.

Option: ``connection_string`` (required), e.g. ``postgresql://watch:pw@db:5432/app``
or ``redis://:pw@cache:6379/0``. It is a secret: every answer and event shows
``"***"`` and sending ``"***"`` back in an update keeps the stored one; passwords
are masked in every result text. The connection's host is the destination
CHECK_DENY_NETWORKS judges (a Unix socket path is refused while the list is set).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.connection import parse_url

from app.egress import EgressDenied, EgressPolicy
from app.monitoring.checks import CheckOutcome
from app.monitoring.kinds.common import (
    MASK,
    Bad,
    allowed_address,
    connection_secrets,
    failed,
    known_options,
    passed,
    scrub,
    with_deadline,
)

OPTIONS = {"connection_string"}
SCHEMES = {"postgres": ("postgresql", "postgres"), "redis": ("redis", "rediss")}
EXAMPLES = {
    "postgres": "postgresql://user:password@db.example.com:5432/app",
    "redis": "redis://:password@cache:6379/0",
}
DEFAULT_PORTS = {"postgres": 5432, "redis": 6379}

SCHEMA: dict[str, Any] = {"connection_string": {"type": "string", "minLength": 1, "maxLength": 2048}}


def validate(kind: str, values: Mapping[str, Any], bad: Bad) -> None:
    options = values.get("options") or {}
    known_options(kind, options, OPTIONS, bad)
    text = options.get("connection_string")
    path = "options.connection_string"
    if not text:
        bad(path, f"a {kind} monitor needs options.connection_string, e.g. {EXAMPLES[kind]}")
        return
    if text == MASK:
        bad(path, f"{path}: re-enter the connection string (*** keeps the stored one only in an update)")
        return
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        bad(path, f"{path}: not a valid connection string ({exc})")
        return
    if parts.scheme not in SCHEMES[kind]:
        schemes = " or ".join(f"{s}://" for s in SCHEMES[kind])
        bad(path, f"{path}: must start with {schemes}")
    elif kind == "redis" and not parts.hostname:
        bad(path, f"{path}: must name a host, e.g. {EXAMPLES[kind]}")


async def run(kind: str, values: Mapping[str, Any], timeout: float, policy: EgressPolicy) -> CheckOutcome:
    dsn = str((values.get("options") or {}).get("connection_string") or "")
    secrets = connection_secrets(dsn)
    started = time.perf_counter()
    probe = (
        _postgres(dsn, timeout, policy, started)
        if kind == "postgres"
        else _redis(dsn, timeout, policy, started)
    )
    outcome = await with_deadline(timeout, started, probe)
    if outcome.error:
        # A driver's message may quote the connection string; never show its secrets.
        return CheckOutcome(False, outcome.latency_ms, None, scrub(outcome.error, secrets), None)
    return outcome


def _destination(dsn: str, kind: str) -> tuple[str | None, int]:
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname
    if kind == "postgres" and not host:
        query = dict(urllib.parse.parse_qsl(parts.query))
        host = query.get("host")
        if host and host.startswith("/"):
            host = None
    return host, parts.port or DEFAULT_PORTS[kind]


def _network_error(exc: BaseException) -> str | None:
    if isinstance(exc, EgressDenied):
        return str(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name could not be resolved"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError):
        return f"could not connect: {exc.strerror or exc}"
    return None


async def _postgres(dsn: str, timeout: float, policy: EgressPolicy, started: float) -> CheckOutcome:
    overrides: dict[str, Any] = {}
    try:
        if policy.active:
            host, port = _destination(dsn, "postgres")
            if not host:
                return failed(
                    started, "a Unix socket is not an allowed destination while CHECK_DENY_NETWORKS is set"
                )
            overrides = {"host": await allowed_address(host, port, policy), "port": port}
        conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout, **overrides)
    except asyncpg.InvalidPasswordError:
        return failed(started, "authentication failed (password or user rejected)")
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        return failed(started, f"authentication failed: {exc}")
    except asyncpg.InvalidCatalogNameError as exc:
        return failed(started, f"database does not exist: {exc}")
    except asyncpg.PostgresError as exc:
        return failed(started, f"postgres error: {exc}")
    except (OSError, asyncpg.InterfaceError, ValueError) as exc:
        return failed(started, _network_error(exc) or f"could not connect: {exc}")
    try:
        value = await conn.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        return failed(started, f"SELECT 1 failed: {exc}")
    finally:
        try:
            await conn.close(timeout=timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            conn.terminate()  # the round trip decided the result; a failed goodbye does not
    if value != 1:
        return failed(started, f"SELECT 1 returned {value!r}")
    return passed(started)


async def _redis(dsn: str, timeout: float, policy: EgressPolicy, started: float) -> CheckOutcome:
    try:
        params: dict[str, Any] = dict(parse_url(dsn))  # type: ignore[no-untyped-call]
        if policy.active:
            host, port = _destination(dsn, "redis")
            params["host"] = await allowed_address(str(host), port, policy)
    except (OSError, ValueError) as exc:
        return failed(started, _network_error(exc) or f"bad connection string: {exc}")
    client = aioredis.Redis(
        **params,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        # One attempt: a health check reports the failure instead of retrying it away.
        retry=Retry(NoBackoff(), 0),
        single_connection_client=True,
    )
    try:
        answer = await client.ping()
    except redis.exceptions.AuthenticationError:
        return failed(started, "authentication failed (password or user rejected)")
    except redis.exceptions.ResponseError as exc:
        return failed(started, f"redis error: {exc}")
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        cause: BaseException | None = exc
        while cause is not None:
            text = _network_error(cause) if not isinstance(cause, redis.exceptions.RedisError) else None
            if text:
                return failed(started, text)
            cause = cause.__cause__ or cause.__context__
        message = str(exc)
        if "refused" in message.lower():
            return failed(started, "connection refused")
        return failed(started, f"could not connect: {message}")
    except redis.exceptions.RedisError as exc:
        return failed(started, f"redis error: {exc}")
    finally:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await client.aclose()
    if answer is not True:
        return failed(started, f"PING answered {answer!r}")
    return passed(started)
