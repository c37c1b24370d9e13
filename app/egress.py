"""Egress policy: which addresses checks and alert deliveries may connect to.

A tenant chooses the URLs and hosts the server connects to, so on a shared
deployment a check or a webhook could reach loopback services, the private
network or a cloud metadata endpoint. ``CHECK_DENY_NETWORKS`` (HTTP and TCP
checks, CHECK_NOW) and ``ALERT_DENY_NETWORKS`` (CHANNEL_TEST and deliveries)
list networks that are never connected to; both are empty by default.

The policy is applied to the address actually connected to, after DNS
resolution, on every connection: each redirect hop opens its own connection and
passes through the same gate, and the socket goes to the very address that was
checked, so a name that resolves differently the second time (DNS rebinding)
gains nothing. TLS still uses the name (SNI, certificate check, Host header).

A name resolving to several addresses connects to the first allowed one; it is
refused only when every address is denied. IPv4-mapped IPv6 addresses
(``::ffff:127.0.0.1``) are judged as the IPv4 address they reach.

With an empty list nothing changes: the clients and connections are exactly the
ones used before the policy existed. With a list, HTTP(S)_PROXY from the
environment is ignored, since a proxy would connect on our behalf unchecked.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from app.settings import Settings, parse_networks

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class EgressDenied(OSError):
    """Every address of a destination is in a deny list; the message names the address and the setting."""


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Networks one kind of outbound traffic may not reach; ``setting`` names where they came from."""

    deny: tuple[Network, ...] = ()
    setting: str = "CHECK_DENY_NETWORKS"

    @classmethod
    def for_checks(cls, settings: Settings) -> EgressPolicy:
        return cls(parse_networks(settings.check_deny_networks), "CHECK_DENY_NETWORKS")

    @classmethod
    def for_alerts(cls, settings: Settings) -> EgressPolicy:
        return cls(parse_networks(settings.alert_deny_networks), "ALERT_DENY_NETWORKS")

    @property
    def active(self) -> bool:
        return bool(self.deny)

    def denies(self, address: str) -> bool:
        """Whether connecting to the IP ``address`` is forbidden (scope ids ignored)."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c in net for c in candidates for net in self.deny if c.version == net.version)

    def refusal(self, address: str, host: str | None = None) -> EgressDenied:
        named = f" ({host})" if host and host.strip("[]") != address else ""
        return EgressDenied(f"destination {address}{named} is blocked by {self.setting}")

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` this policy allows, in resolver order.

        Raises :class:`EgressDenied` when there are addresses but none is allowed,
        and ``socket.gaierror`` when the name does not resolve.
        """
        infos = await asyncio.get_running_loop().getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [a for a in addresses if not self.denies(a)]
        if addresses and not allowed:
            raise self.refusal(addresses[0], host)
        return allowed


def denied_cause(exc: BaseException | None) -> EgressDenied | None:
    """The :class:`EgressDenied` behind ``exc`` (httpx wraps it twice), if any."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, EgressDenied):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the policy in front of every TCP connect."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self.policy.resolve(host, port)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:  # EgressDenied and gaierror: httpx reports them as ConnectError
            raise httpcore.ConnectError(str(exc)) from exc
        last: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an allowed destination")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def http_client(
    policy: EgressPolicy, *, verify: bool | ssl.SSLContext = True, **kwargs: Any
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose every connection (redirects included) obeys ``policy``.

    ``kwargs`` go to the client (``headers``, ``limits``, ``follow_redirects``…).
    """
    if not policy.active:
        return httpx.AsyncClient(verify=verify, **kwargs)
    limits = kwargs.pop("limits", httpx.Limits())
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    pool = transport._pool
    # httpx has no public knob for the network backend; the pool hands this one to
    # every connection it opens. tests/test_egress.py fails if that ever stops working.
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # pragma: no cover - httpx internals changed
        raise RuntimeError("httpx transport layout changed: cannot apply the egress policy")
    pool._network_backend = _GuardedBackend(policy)
    return httpx.AsyncClient(transport=transport, trust_env=False, **kwargs)


async def open_connection(
    host: str, port: int, policy: EgressPolicy
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` to an address of ``host`` that ``policy`` allows."""
    if not policy.active:
        return await asyncio.open_connection(host, port)
    addresses = await policy.resolve(host, port)
    last: OSError = OSError(f"{host} has no address")
    for address in addresses:
        try:
            return await asyncio.open_connection(address, port)
        except OSError as exc:
            last = exc
    raise last


_check_policy = EgressPolicy()


def install_check_policy(policy: EgressPolicy) -> None:
    """Make ``policy`` the one every check runner of this process uses (``create_app`` calls it).

    Process-wide because checks run from the collector and from CHECK_NOW, neither
    of which carries settings down to the runners.
    """
    global _check_policy
    _check_policy = policy


def check_policy() -> EgressPolicy:
    """The policy installed for checks (empty until :func:`install_check_policy`)."""
    return _check_policy
