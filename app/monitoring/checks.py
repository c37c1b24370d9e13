"""Check runners: one HTTP or TCP probe in, one :class:`CheckOutcome` out.

The runners never raise for a failing target: every failure becomes an outcome
with ``ok=False`` and a short human ``error`` ("timed out after 5 s",
"connection refused", "status 500, expected 200-399"), because the collector
stores and broadcasts outcomes, not exceptions.

HTTP checks share :class:`HttpClients` (one per collector; two httpx clients,
since TLS verification is fixed per client). Keep-alive is off on purpose: a
health check must open a fresh connection, or a dead listener hides behind a
pooled socket and the TLS certificate is never seen again.

TLS certificate expiry comes from the peer certificate of the final response's
connection (``network_stream`` → ``ssl_object``); it is read in binary form and
parsed with ``cryptography``, so it works with ``verify_tls=False`` too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import socket
import ssl
import time
import urllib.parse
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from app import egress
from app.egress import EgressDenied, EgressPolicy

#: At most this much of a body is read (CHECK_MAX_BODY_BYTES); the keyword is searched in it.
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_EXPECTED_STATUS: tuple[tuple[int, int], ...] = ((200, 399),)


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The result of one probe; ``error`` is None exactly when ``ok``."""

    ok: bool
    latency_ms: float | None = None
    status_code: int | None = None
    error: str | None = None
    cert_expires_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class HttpSpec:
    url: str
    method: str = "GET"
    #: Accepted status ranges, inclusive; see :func:`parse_expected_status`.
    expected_status: tuple[tuple[int, int], ...] = DEFAULT_EXPECTED_STATUS
    keyword: str | None = None
    timeout: float = 10.0
    follow_redirects: bool = True
    verify_tls: bool = True
    headers: dict[str, str] = field(default_factory=dict)
    max_body_bytes: int = MAX_BODY_BYTES


def parse_expected_status(value: Sequence[int | str] | None) -> tuple[tuple[int, int], ...]:
    """Turn the wire form (``[200, "300-399"]``) into inclusive ranges.

    Raises ``ValueError`` with a sentence the handler can return as-is.
    """
    if value is None:
        return DEFAULT_EXPECTED_STATUS
    if not value:
        raise ValueError('expected_status needs at least one code or range, e.g. [200] or ["200-399"]')
    ranges: list[tuple[int, int]] = []
    for item in value:
        if isinstance(item, bool):
            raise ValueError(
                f'{item!r} is not a status code; use a number like 200 or a range like "200-399"'
            )
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str):
            text = item.strip()
            lo_s, sep, hi_s = text.partition("-")
            try:
                lo = int(lo_s)
                hi = int(hi_s) if sep else lo
            except ValueError:
                raise ValueError(
                    f'{item!r} is not a status code or range; use a number like 200 or a range like "200-399"'
                ) from None
        else:
            raise ValueError(
                f'{item!r} is not a status code; use a number like 200 or a range like "200-399"'
            )
        if not (100 <= lo <= hi <= 599):
            raise ValueError(
                f"{item!r} is out of range; status codes run from 100 to 599 and ranges go low-high"
            )
        ranges.append((lo, hi))
    return tuple(ranges)


def format_expected_status(ranges: Sequence[tuple[int, int]]) -> str:
    return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def status_matches(code: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= code <= hi for lo, hi in ranges)


class HttpClients:
    """The shared httpx clients of one collector. Call :meth:`aclose` when it stops.

    Every connection they open obeys ``policy`` (default: the process's
    CHECK_DENY_NETWORKS policy, :func:`app.egress.check_policy`), redirects included.
    """

    def __init__(self, policy: EgressPolicy | None = None) -> None:
        # httpx logs every request at INFO; with thousands of checks a minute that
        # buries everything else. Failures are recorded as results instead.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self.policy = policy if policy is not None else egress.check_policy()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        headers = {"User-Agent": "Watchpost/1 (health check)"}
        self.verifying = egress.http_client(self.policy, verify=True, limits=limits, headers=headers)
        self.insecure = egress.http_client(self.policy, verify=False, limits=limits, headers=headers)

    def get(self, verify_tls: bool) -> httpx.AsyncClient:
        return self.verifying if verify_tls else self.insecure

    async def aclose(self) -> None:
        await self.verifying.aclose()
        await self.insecure.aclose()


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _cert_expiry(response: httpx.Response) -> dt.datetime | None:
    stream = response.extensions.get("network_stream")
    if stream is None:
        return None
    ssl_object = stream.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).not_valid_after_utc


def _describe_error(exc: BaseException, timeout: float) -> str:
    """A short sentence for an httpx/network failure (never a traceback)."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {_seconds(timeout)}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate rejected: {cause.verify_message or cause.reason}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name could not be resolved"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx.RemoteProtocolError):
        return "server closed the connection without a valid response"
    if isinstance(exc, httpx.ConnectError):
        text = str(exc) or "could not connect"
        if "refused" in text.lower():
            return "connection refused"
        return f"could not connect: {text}"
    if isinstance(exc, httpx.TooManyRedirects):
        return "too many redirects"
    text = str(exc) or type(exc).__name__
    return text[:200]


async def run_http_check(spec: HttpSpec, clients: HttpClients | None = None) -> CheckOutcome:
    """Probe ``spec.url`` once. Pass the collector's shared clients; without them a
    temporary pair is created and closed (fine for CHECK_NOW, wasteful in a loop)."""
    own = clients is None
    active = clients if clients is not None else HttpClients()
    try:
        return scrub_outcome(await _http_once(spec, active.get(spec.verify_tls)), spec.url)
    finally:
        if own:
            await active.aclose()


class _SendClock:
    """When the first network step of a request began (httpcore's ``trace`` hook).

    Latency is timed from there, not from the call: building the request and
    waiting for the event loop before the connect are not the target's time.
    """

    __slots__ = ("started",)

    def __init__(self) -> None:
        self.started: float | None = None

    async def __call__(self, event: str, info: dict[str, Any]) -> None:
        if self.started is None and event.endswith(".started"):
            self.started = time.perf_counter()

    def since(self, fallback: float) -> float:
        return self.started if self.started is not None else fallback


async def _http_once(spec: HttpSpec, client: httpx.AsyncClient) -> CheckOutcome:
    called = time.perf_counter()
    clock = _SendClock()
    status: int | None = None
    cert: dt.datetime | None = None
    try:
        # One deadline for the whole exchange, not httpx's per-phase timeouts:
        # a target that trickles bytes must still fail within `timeout`.
        async with asyncio.timeout(spec.timeout):
            async with client.stream(
                spec.method,
                spec.url,
                # Ask for the body as sent: a compressed body would be inflated without a
                # bound before we could count it. A server that compresses anyway is
                # inflated by _BodyReader, bounded too.
                headers={"Accept-Encoding": "identity", **spec.headers},
                follow_redirects=spec.follow_redirects,
                timeout=spec.timeout,
                extensions={"trace": clock},
            ) as response:
                status = response.status_code
                cert = _cert_expiry(response)
                reader = _BodyReader(spec.max_body_bytes, response.headers.get("content-encoding", ""))
                async for chunk in response.aiter_raw():
                    if reader.feed(chunk):
                        break  # the rest is never read: the connection is closed with the stream
    except TimeoutError:
        return _fail(clock.since(called), f"timed out after {_seconds(spec.timeout)}", status, cert)
    except (httpx.HTTPError, OSError, ssl.SSLError, zlib.error) as exc:
        return _fail(clock.since(called), _describe_error(exc, spec.timeout), status, cert)
    latency = (time.perf_counter() - clock.since(called)) * 1000
    if not status_matches(status, spec.expected_status):
        return CheckOutcome(
            False,
            latency,
            status,
            f"status {status}, expected {format_expected_status(spec.expected_status)}",
            cert,
        )
    if spec.keyword is not None and spec.keyword.encode() not in reader.body:
        where = f"the first {spec.max_body_bytes} bytes" if reader.truncated else "the body"
        return CheckOutcome(False, latency, status, f"keyword {spec.keyword!r} not found in {where}", cert)
    return CheckOutcome(True, latency, status, None, cert)


class _BodyReader:
    """Keeps at most ``limit`` bytes of a response body (decoded when gzip/deflate), so a
    check costs bounded memory whatever the target sends; ``truncated`` says it stopped early."""

    def __init__(self, limit: int, encoding: str) -> None:
        self.limit = limit
        self.body = bytearray()
        self.truncated = False
        coding = encoding.strip().lower()
        self._inflate: Any = None
        if coding in ("gzip", "x-gzip"):
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif coding == "deflate":
            self._inflate = zlib.decompressobj()

    def feed(self, chunk: bytes) -> bool:
        """Add a raw chunk; True once ``limit`` bytes are held (stop reading)."""
        room = self.limit - len(self.body)
        # max_length bounds the output of this call: a small bomb cannot expand past room.
        data = chunk if self._inflate is None else self._inflate.decompress(chunk, room + 1)
        if len(data) > room:
            self.body += data[:room]
            self.truncated = True
            return True
        self.body += data
        if self._inflate is not None and self._inflate.unconsumed_tail:
            self.truncated = True  # more output pending than room
            return True
        return False


def scrub_outcome(outcome: CheckOutcome, url: str | None) -> CheckOutcome:
    """``outcome`` without the URL's credentials in its error (an exception text may quote
    the URL; results are shown to every viewer and stored)."""
    if outcome.error is None or not url:
        return outcome
    scrubbed = scrub_text(outcome.error, url)
    return outcome if scrubbed == outcome.error else dataclasses.replace(outcome, error=scrubbed)


def scrub_text(text: str, url: str | None) -> str:
    """``text`` with the ``user:password`` of ``url`` (as sent and percent-decoded) replaced by ***."""
    if not url or "@" not in url:
        return text
    netloc = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if "@" not in netloc:
        return text
    userinfo = netloc.rsplit("@", 1)[0]
    secrets = {userinfo, urllib.parse.unquote(userinfo)}
    for part in userinfo.split(":", 1):
        if len(part) >= 3:  # a one-letter user name would mask every such letter in the text
            secrets |= {part, urllib.parse.unquote(part)}
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _fail(started: float, error: str, status: int | None, cert: dt.datetime | None) -> CheckOutcome:
    # Latency of a failed probe says how long it took to fail; keep it for timeouts
    # and refusals alike so the history shows "refused in 1 ms" vs "hung for 5 s".
    return CheckOutcome(False, (time.perf_counter() - started) * 1000, status, error, cert)


async def run_tcp_check(
    host: str, port: int, timeout: float, policy: EgressPolicy | None = None
) -> CheckOutcome:
    """Open and close one TCP connection; latency is the connect time. The connection
    obeys ``policy`` (default: the process's CHECK_DENY_NETWORKS policy)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await egress.open_connection(
                host, port, policy if policy is not None else egress.check_policy()
            )
    except EgressDenied as exc:
        return _fail(started, str(exc), None, None)
    except TimeoutError:
        return _fail(started, f"timed out after {_seconds(timeout)}", None, None)
    except ConnectionRefusedError:
        return _fail(started, "connection refused", None, None)
    except socket.gaierror:
        return _fail(started, "host name could not be resolved", None, None)
    except OSError as exc:
        return _fail(started, f"could not connect: {exc.strerror or exc}", None, None)
    latency = (time.perf_counter() - started) * 1000
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass  # the peer may reset on close; the connect already succeeded
    return CheckOutcome(True, latency, None, None, None)
