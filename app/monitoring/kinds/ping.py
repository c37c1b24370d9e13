"""The ``ping`` kind: ICMP echo to ``host`` (icmplib).

Options: ``count`` (echo requests, 1-10, default 3) and ``max_loss`` (the percentage
of lost packets still counted as up, 0-100, default 0: every packet must come
back). Latency is the average round trip of the answered packets.

ICMP needs either unprivileged ICMP sockets (Linux: the process's group within
``net.ipv4.ping_group_range``) or raw sockets (root or CAP_NET_RAW). CHECK_PING
chooses: ``auto`` (unprivileged where the host allows it, else raw sockets when
the process may open them), ``unprivileged``, ``privileged`` or ``off``. Where
the chosen way is not available MONITOR_CREATE/UPDATE/CHECK_NOW refuse a ping
monitor with the reason, rather than recording a failure every interval.
The resolved address is the destination CHECK_DENY_NETWORKS judges.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Mapping
from typing import Any

import icmplib

from app.egress import EgressPolicy
from app.monitoring.checks import CheckOutcome
from app.monitoring.kinds.common import Bad, failed, is_ip, known_options, with_deadline
from app.urls import valid_hostname

OPTIONS = {"count", "max_loss"}
MODES = ("auto", "unprivileged", "privileged", "off")

SCHEMA: dict[str, Any] = {
    "count": {"type": "integer", "minimum": 1, "maximum": 10},
    "max_loss": {"type": "number", "minimum": 0, "maximum": 100},
}

_mode = "auto"


def install_mode(mode: str) -> None:
    """Use CHECK_PING ``mode`` in this process (``create_app`` calls it, like the egress policy)."""
    global _mode
    _mode = mode if mode in MODES else "auto"


def _can_open(kind: int) -> bool:
    try:
        sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
    except OSError:
        return False
    sock.close()
    return True


def privileged_or_reason(mode: str | None = None) -> tuple[bool | None, str]:
    """``(privileged, "")`` for the ICMP sockets ping checks use here, or ``(None, reason)``."""
    mode = mode or _mode
    if mode == "off":
        return None, "ping monitors are turned off on this server (CHECK_PING=off)"
    if mode in ("auto", "unprivileged") and _can_open(socket.SOCK_DGRAM):
        return False, ""
    if mode in ("auto", "privileged") and _can_open(socket.SOCK_RAW):
        return True, ""
    if mode == "unprivileged":
        return None, (
            "this server may not open unprivileged ICMP sockets (CHECK_PING=unprivileged; "
            "the host's net.ipv4.ping_group_range must include the server's group)"
        )
    if mode == "privileged":
        return (
            None,
            "this server may not open raw ICMP sockets (CHECK_PING=privileged needs root or CAP_NET_RAW)",
        )
    return None, (
        "this server can send no ICMP echo: unprivileged ICMP sockets are not allowed "
        "(net.ipv4.ping_group_range) and raw sockets need root or CAP_NET_RAW"
    )


def validate(values: Mapping[str, Any], bad: Bad) -> None:
    options = values.get("options") or {}
    known_options("ping", options, OPTIONS, bad)
    host = values.get("host")
    if not host:
        bad("host", "a ping monitor needs a host, e.g. 192.0.2.10 or router.example.com")
    elif not valid_hostname(host) and not is_ip(host):
        bad("host", "host: must be a host name or IP address, without scheme, port or path")
    privileged, reason = privileged_or_reason()
    if privileged is None:
        bad("kind", reason)


async def run(values: Mapping[str, Any], timeout: float, policy: EgressPolicy) -> CheckOutcome:
    started = time.perf_counter()
    return await with_deadline(timeout, started, _ping(values, timeout, policy, started))


async def _ping(
    values: Mapping[str, Any], timeout: float, policy: EgressPolicy, started: float
) -> CheckOutcome:
    options = values.get("options") or {}
    host = str(values.get("host"))
    count = int(options.get("count") or 3)
    max_loss = float(options.get("max_loss") or 0)
    privileged, reason = privileged_or_reason()
    if privileged is None:
        return failed(started, reason)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host.strip("[]"), None, type=socket.SOCK_RAW)
    except socket.gaierror:
        return failed(started, "host name could not be resolved")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    allowed = [a for a in addresses if not policy.active or not policy.denies(a)]
    if not allowed:
        return failed(
            started, str(policy.refusal(addresses[0], host)) if addresses else f"{host} has no address"
        )
    # Spread the requests so that all of them and their answers fit in the timeout.
    interval = min(0.2, timeout / (2 * count))
    wait = max(0.05, timeout / count - interval - 0.02)
    try:
        result = await icmplib.async_ping(
            allowed[0], count=count, interval=interval, timeout=wait, privileged=privileged
        )
    except icmplib.ICMPLibError as exc:
        return failed(started, f"ping failed: {exc}")
    except OSError as exc:
        return failed(started, f"ping failed: {exc.strerror or exc}")
    loss = round(result.packet_loss * 100, 1)
    latency = result.avg_rtt if result.packets_received else None
    if loss > max_loss:
        lost = result.packets_sent - result.packets_received
        error = (
            f"{lost} of {result.packets_sent} packets lost ({loss:g} % loss, at most {max_loss:g} % allowed)"
        )
        return CheckOutcome(False, latency, None, error, None)
    return CheckOutcome(True, latency, None, None, None)
