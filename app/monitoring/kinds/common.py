"""What the kind modules share: option validation helpers, the outcome of a failed
probe, masking of secret options and connecting through the egress policy."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from app.egress import EgressPolicy
from app.monitoring.checks import CheckOutcome

MASK = "***"

#: ``bad(path, msg)``: how a kind reports one problem of a definition.
Bad = Callable[[str, str], None]


def seconds(value: float) -> str:
    return f"{value:g} s"


def failed(started: float, error: str, status_code: int | None = None) -> CheckOutcome:
    """A failed outcome whose latency says how long the probe took to fail."""
    return CheckOutcome(False, (time.perf_counter() - started) * 1000, status_code, error[:300], None)


def passed(started: float, status_code: int | None = None) -> CheckOutcome:
    return CheckOutcome(True, (time.perf_counter() - started) * 1000, status_code, None, None)


def known_options(kind: str, options: Mapping[str, Any], allowed: set[str], bad: Bad) -> None:
    for name in sorted(set(options) - allowed):
        bad(
            f"options.{name}", f"{name!r} is not an option of a {kind} monitor ({', '.join(sorted(allowed))})"
        )


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


async def allowed_address(host: str, port: int, policy: EgressPolicy) -> str:
    """The first address of ``host`` that ``policy`` allows (``host`` itself when the policy is
    empty). Raises ``EgressDenied`` or ``socket.gaierror``."""
    if not policy.active:
        return host
    addresses = await policy.resolve(host, port)
    if not addresses:
        raise socket.gaierror(f"{host} has no address")
    return addresses[0]


def connection_secrets(connection_string: str | None) -> list[str]:
    """The parts of a connection string that must never be shown: the password of the
    user-info and ``password=`` query values (the whole user-info too)."""
    if not connection_string:
        return []
    found: list[str] = []
    try:
        parts = urllib.parse.urlsplit(connection_string)
    except ValueError:
        return [connection_string]
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        found += [p for p in (password, urllib.parse.unquote(password)) if p]
        if len(user) >= 3:
            found += [user, urllib.parse.unquote(user)]
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=False):
        if name.lower() in ("password", "passwd", "sslpassword") and value:
            found.append(value)
    return sorted(set(found), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


async def with_deadline(timeout: float, started: float, work: Any) -> CheckOutcome:
    """Run the coroutine ``work`` with one deadline for the whole probe."""
    try:
        async with asyncio.timeout(timeout):
            result: CheckOutcome = await work
            return result
    except TimeoutError:
        return failed(started, f"timed out after {seconds(timeout)}")
