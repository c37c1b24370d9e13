"""The collector's fast path for simple HTTP checks: one plain ``http://`` GET or HEAD.

Most health checks are ``GET http://host:port/path`` expecting a status range and
maybe a keyword. For those, the full client path (httpx → httpcore → anyio, built
for redirects, TLS, proxies and pooling) cost about half of the collector's CPU per
check. This module does the same exchange on one asyncio protocol with the HTTP/1.1
response parser uvicorn already uses (``httptools``, C): connect, write one request,
parse the answer, read at most ``max_body_bytes`` of the body, close.

What it keeps from :func:`app.monitoring.checks.run_http_check`:

- the egress policy (CHECK_DENY_NETWORKS) on the address actually connected to,
  after resolution, and the same error sentences ("connection refused",
  "timed out after 5 s", "could not connect: destination … is blocked by …");
- one deadline for the whole exchange; the body limit (gzip/deflate inflated with
  the same bounded reader) and the keyword search in it;
- latency timed from the first network step (resolution or connect) to the end
  of the body, never from when the check was scheduled.

What it does not do, and hands back to the full client by returning None (the
check is then made again there, from the start): ``https://`` (TLS verification
and the certificate's expiry), redirects to follow, user info in the URL,
methods other than GET/HEAD, request headers or any other field of
:class:`~app.monitoring.checks.HttpSpec` that is not at its default, 1xx answers
:func:`plan` decides before connecting; the
hand-over after connecting only happens for a redirect or an odd response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import time
import zlib
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

from app import egress
from app.egress import EgressDenied, EgressPolicy
from app.monitoring.checks import (
    CheckOutcome,
    HttpSpec,
    _BodyReader,
    format_expected_status,
    scrub_outcome,
    status_matches,
)

#: Fields of HttpSpec this path implements; any other field must hold its default.
HANDLED_FIELDS = frozenset(
    {
        "url",
        "method",
        "expected_status",
        "keyword",
        "timeout",
        "follow_redirects",
        "verify_tls",
        "max_body_bytes",
    }
)
#: A response head larger than this is refused (the full client would refuse it too).
MAX_HEAD_BYTES = 64 * 1024
USER_AGENT = "Watchpost/1 (health check)"
#: The full client's sentence for a response it cannot parse or that ends early.
INVALID_RESPONSE = "server closed the connection without a valid response"


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(HttpSpec):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


_DEFAULTS = _defaults()


@dataclass(frozen=True, slots=True)
class Plan:
    """Where to connect and the request bytes to send."""

    host: str
    port: int
    request: bytes
    head: bool
    literal: bool


def plan(spec: HttpSpec) -> Plan | None:
    """The fast-path plan for ``spec``, or None when the full client must run it."""
    if spec.method not in ("GET", "HEAD"):
        return None
    for f in dataclasses.fields(spec):
        if f.name in HANDLED_FIELDS:
            continue
        if f.name not in _DEFAULTS or getattr(spec, f.name) != _DEFAULTS[f.name]:
            return None
    try:
        parts = urlsplit(spec.url)
        port = parts.port or 80
    except ValueError:
        return None
    if parts.scheme.lower() != "http" or "@" in parts.netloc:
        return None
    host = parts.hostname
    if not host or not host.isascii():
        return None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    # Anything httpx would percent-encode or reject: let it.
    if not target.isascii() or any(c in target for c in " \t\r\n\x00") or not target.startswith("/"):
        return None
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    named = f"[{host}]" if ":" in host else host
    host_header = named if port == 80 else f"{named}:{port}"
    request = (
        f"{spec.method} {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: identity\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    return Plan(host, port, request, spec.method == "HEAD", literal)


class _HandOver(Exception):
    """The response needs the full client (a redirect to follow, a 1xx, an odd framing)."""


class _Exchange(asyncio.Protocol):
    """One request and its response on one connection."""

    def __init__(self, plan: Plan, spec: HttpSpec, done: asyncio.Future[None]) -> None:
        self.plan = plan
        self.spec = spec
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.head_bytes = 0
        self.headers_complete = False
        self.reader: _BodyReader | None = None
        self.framed = False  # Content-Length or chunked: the end is known, EOF before it is an error

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: uvloop's transports (the server's loop) are not asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.plan.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        if not self.headers_complete:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(_HandOver("upgrade"))
        except httptools.HttpParserError as exc:
            # A callback's own exception (a hand-over, a bad gzip stream) arrives wrapped.
            cause = exc.__context__
            if isinstance(cause, (_HandOver, zlib.error)):
                self._finish(cause)
            else:
                self._finish(ConnectionResetError(INVALID_RESPONSE))
        except (zlib.error, _HandOver) as exc:
            self._finish(exc)
        if not self.done.done() and not self.headers_complete and self.head_bytes > MAX_HEAD_BYTES:
            self._finish(ConnectionError("response headers too large"))

    def eof_received(self) -> bool | None:
        self._ended()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    # -- httptools callbacks ------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.headers_complete = True
        status = self.parser.get_status_code()
        if status < 200:
            raise _HandOver("informational response")
        if 300 <= status < 400 and self.spec.follow_redirects and b"location" in self.headers:
            raise _HandOver("redirect")
        self.status = status
        self.framed = b"content-length" in self.headers or b"transfer-encoding" in self.headers
        encoding = self.headers.get(b"content-encoding", b"").decode("latin-1")
        self.reader = _BodyReader(self.spec.max_body_bytes, encoding)
        if self.plan.head or status in (204, 304):
            self._finish(None)

    def on_body(self, body: bytes) -> None:
        if self.reader is not None and not self.done.done() and self.reader.feed(body):
            self._finish(None)  # the limit is reached: the rest is never read

    def on_message_complete(self) -> None:
        self._finish(None)

    # -- end ----------------------------------------------------------------------------------
    def _ended(self) -> None:
        if self.done.done():
            return
        if self.headers_complete and not self.framed:
            self._finish(None)  # a body delimited by the end of the connection
        else:
            self._finish(ConnectionResetError(INVALID_RESPONSE))

    def _finish(self, error: BaseException | None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)
        if self.transport is not None:
            self.transport.close()


async def _connect(
    loop: asyncio.AbstractEventLoop,
    plan: Plan,
    spec: HttpSpec,
    policy: EgressPolicy,
    done: asyncio.Future[None],
) -> _Exchange:
    if plan.literal:
        if policy.active and policy.denies(plan.host):
            raise policy.refusal(plan.host)
        addresses = [plan.host]
    elif policy.active:
        addresses = await policy.resolve(plan.host, plan.port)
    else:
        infos = await loop.getaddrinfo(
            plan.host, plan.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    last: OSError = OSError(f"{plan.host} has no address")
    for address in addresses:
        try:
            _transport, protocol = await loop.create_connection(
                lambda: _Exchange(plan, spec, done), address, plan.port
            )
            return protocol
        except OSError as exc:
            last = exc
    raise last


def _connect_error(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name could not be resolved"
    if isinstance(exc, EgressDenied):
        return f"could not connect: {exc}"
    return f"could not connect: {exc.strerror or exc}"


async def run(fast: Plan, spec: HttpSpec, policy: EgressPolicy | None = None) -> CheckOutcome | None:
    """Probe once on the fast path; None hands the check to the full client."""
    policy = policy if policy is not None else egress.check_policy()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    exchange: _Exchange | None = None
    started = time.perf_counter()
    try:
        async with asyncio.timeout(spec.timeout):
            try:
                exchange = await _connect(loop, fast, spec, policy, done)
            except OSError as exc:
                return _fail(started, _connect_error(exc), None)
            await done
    except TimeoutError:
        if exchange is not None and exchange.transport is not None:
            exchange.transport.abort()
        status = exchange.status if exchange is not None else None
        return _fail(started, f"timed out after {spec.timeout:g} s", status)
    except _HandOver:
        return None
    except zlib.error as exc:
        return _fail(started, (str(exc) or type(exc).__name__)[:200], exchange.status if exchange else None)
    except OSError as exc:
        status = exchange.status if exchange is not None else None
        text = str(exc) if isinstance(exc, ConnectionError) and str(exc) else _connect_error(exc)
        return _fail(started, text, status)
    latency = (time.perf_counter() - started) * 1000
    assert exchange is not None and exchange.status is not None and exchange.reader is not None
    status, reader = exchange.status, exchange.reader
    if not status_matches(status, spec.expected_status):
        error = f"status {status}, expected {format_expected_status(spec.expected_status)}"
        return scrub_outcome(CheckOutcome(False, latency, status, error), spec.url)
    if spec.keyword is not None and spec.keyword.encode() not in reader.body:
        where = f"the first {spec.max_body_bytes} bytes" if reader.truncated else "the body"
        return CheckOutcome(False, latency, status, f"keyword {spec.keyword!r} not found in {where}")
    return CheckOutcome(True, latency, status, None)


def _fail(started: float, error: str, status: int | None) -> CheckOutcome:
    return CheckOutcome(False, (time.perf_counter() - started) * 1000, status, error)
