"""Check runners: one HTTP or TCP probe in, one :class:`CheckOutcome` out.

The runners never raise for a failing target: every failure becomes an outcome
with ``ok=False`` and a short human ``error`` ("timed out after 5 s",
"connection refused", "status 500, expected 200-399"), because the collector
stores and broadcasts outcomes, not exceptions.

HTTP checks share :class:`HttpClients` (one per collector; two httpx clients,
since TLS verification is fixed per client). Keep-alive is off on purpose: a
health check must open a fresh connection, or a dead listener hides behind a
pooled socket and the TLS certificate is never seen again.

TLS certificate expiry comes from the certificate chain the server sent on the
final response's connection (``network_stream`` → ``ssl_object``): the earliest
expiry of the chain and the issuer of the leaf, read in binary form and parsed
with ``cryptography``, so it works with ``verify_tls=False`` too.

After the status and keyword shorthands, the monitor's conditions
(:mod:`app.monitoring.conditions`) are evaluated against the answer; a failing
``warn:`` condition or a response slower than ``degraded_latency_ms`` makes the
outcome ``degraded`` (ok, with a ``warning`` saying why).
The websocket, dns and tcp runners judge their conditions with
:func:`judge_answer` on what they saw.

Request building (method, headers, auth, body, redirects) is in
:func:`build_request`; a fast-path probe for plain GETs must fall back to this
full path whenever a monitor has headers, a body, auth, a non-GET method,
a redirect limit other than the default, conditions, a degraded latency, or
certificate alerts (every HTTPS check here records the certificate).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.cookiejar
import logging
import math
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
from app.monitoring.conditions import Answer, Condition, evaluate

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
    #: Ok, but a ``warn:`` condition or the latency threshold did not hold (``warning`` says which).
    degraded: bool = False
    warning: str | None = None
    cert_issuer: str | None = None


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
    body: str | None = None
    max_redirects: int = 10
    conditions: tuple[Condition, ...] = ()
    degraded_latency_ms: float | None = None
    #: Values to mask in error texts (auth password/token, secret header values).
    secrets: tuple[str, ...] = ()


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
        # The clients are shared by every monitor of every tenant: a cookie one target sets
        # (a session after basic auth) must never be sent on another monitor's check.
        for client in (self.verifying, self.insecure):
            client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))

    def get(self, verify_tls: bool) -> httpx.AsyncClient:
        return self.verifying if verify_tls else self.insecure

    async def aclose(self) -> None:
        await self.verifying.aclose()
        await self.insecure.aclose()


def _seconds(value: float) -> str:
    return f"{value:g} s"


#: ``_ssl.ENCODING_DER``: the format argument of the inner certificate objects' public_bytes.
_ENCODING_DER = 2


@dataclass(frozen=True, slots=True)
class CertInfo:
    expires_at: dt.datetime
    issuer: str


def _cert_info(response: httpx.Response) -> CertInfo | None:
    """The earliest expiry in the chain the server sent, and the leaf's issuer."""
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

    leaf = x509.load_der_x509_certificate(der)
    expires = leaf.not_valid_after_utc
    for cert_der in _chain_der(ssl_object):
        try:
            expires = min(expires, x509.load_der_x509_certificate(cert_der).not_valid_after_utc)
        except ValueError:
            continue
    return CertInfo(expires, leaf.issuer.rfc4514_string()[:300])


def _chain_der(ssl_object: Any) -> list[bytes]:
    """The chain as sent (leaf first), DER; empty where the ssl module cannot say
    (``get_unverified_chain`` is public from Python 3.13, on the inner object before)."""
    for owner in (ssl_object, getattr(ssl_object, "_sslobj", None)):
        getter = getattr(owner, "get_unverified_chain", None)
        if getter is None:
            continue
        try:
            chain = getter() or []
        except (ssl.SSLError, ValueError):
            return []
        out = []
        for cert in chain:
            if isinstance(cert, bytes):
                out.append(cert)
            elif hasattr(cert, "public_bytes"):
                out.append(cert.public_bytes(_ENCODING_DER))
        return out
    return []


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
        outcome = scrub_outcome(await _http_once(spec, active.get(spec.verify_tls)), spec.url)
        return scrub_secrets(outcome, spec.secrets)
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


def build_request(spec: HttpSpec, client: httpx.AsyncClient, clock: _SendClock) -> httpx.Request:
    """The first request of a check: method, URL, the monitor's headers and auth, body.

    A fast-path probe may skip this only for a plain GET without headers, body, auth,
    conditions, degraded latency or certificate alerts (see the module docstring)."""
    return client.build_request(
        spec.method,
        spec.url,
        # Ask for the body as sent: a compressed body would be inflated without a
        # bound before we could count it. A server that compresses anyway is
        # inflated by _BodyReader, bounded too.
        headers={"Accept-Encoding": "identity", **spec.headers},
        content=spec.body.encode() if spec.body is not None else None,
        timeout=spec.timeout,
        extensions={"trace": clock},
    )


class _TooManyRedirects(Exception):
    pass


async def _http_once(spec: HttpSpec, client: httpx.AsyncClient) -> CheckOutcome:
    called = time.perf_counter()
    clock = _SendClock()
    status: int | None = None
    cert: CertInfo | None = None
    headers: dict[str, str] = {}
    try:
        # One deadline for the whole exchange, not httpx's per-phase timeouts:
        # a target that trickles bytes must still fail within `timeout`.
        async with asyncio.timeout(spec.timeout):
            request = build_request(spec, client, clock)
            hops = 0
            while True:
                # Redirects one at a time, so the monitor's limit applies (httpx's is per
                # client); httpx builds each next request and drops Authorization when the
                # redirect leaves the origin.
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    if spec.follow_redirects and response.next_request is not None:
                        if hops >= spec.max_redirects:
                            raise _TooManyRedirects
                        hops += 1
                        request = response.next_request
                        continue
                    status = response.status_code
                    headers = dict(response.headers)
                    cert = _cert_info(response)
                    reader = _BodyReader(spec.max_body_bytes, response.headers.get("content-encoding", ""))
                    async for chunk in response.aiter_raw():
                        if reader.feed(chunk):
                            break  # the rest is never read: the connection is closed with the stream
                    break
                finally:
                    await response.aclose()
    except _TooManyRedirects:
        return _fail(
            clock.since(called), f"more than {spec.max_redirects} redirects (max_redirects)", status, cert
        )
    except TimeoutError:
        return _fail(clock.since(called), f"timed out after {_seconds(spec.timeout)}", status, cert)
    except (httpx.HTTPError, OSError, ssl.SSLError, zlib.error) as exc:
        return _fail(clock.since(called), _describe_error(exc, spec.timeout), status, cert)
    latency = (time.perf_counter() - clock.since(called)) * 1000
    return judge(spec, latency, status, headers, reader, cert)


def judge(
    spec: HttpSpec,
    latency: float,
    status: int,
    headers: dict[str, str],
    reader: _BodyReader,
    cert: CertInfo | None,
) -> CheckOutcome:
    """The outcome of a completed exchange: shorthands, conditions, degraded latency."""
    expires = cert.expires_at if cert else None
    issuer = cert.issuer if cert else None

    def outcome(ok: bool, error: str | None, warning: str | None = None) -> CheckOutcome:
        return CheckOutcome(ok, latency, status, error, expires, warning is not None, warning, issuer)

    # A status condition (not warn) replaces the expected_status shorthand.
    status_by_condition = any(c.subject == "status" and not c.warn for c in spec.conditions)
    if not status_by_condition and not status_matches(status, spec.expected_status):
        return outcome(False, f"status {status}, expected {format_expected_status(spec.expected_status)}")
    if spec.keyword is not None and spec.keyword.encode() not in reader.body:
        where = f"the first {spec.max_body_bytes} bytes" if reader.truncated else "the body"
        return outcome(False, f"keyword {spec.keyword!r} not found in {where}")
    warnings: list[str] = []
    if spec.conditions:
        answer = Answer(
            status_code=status,
            latency_ms=latency,
            body=bytes(reader.body),
            headers=headers,
            cert_days=cert_days_left(expires),
            truncated=reader.truncated,
        )
        verdict = evaluate(spec.conditions, answer)
        if verdict.failed:
            return outcome(False, "; ".join(verdict.failed))
        warnings.extend(verdict.warned)
    if spec.degraded_latency_ms is not None and latency > spec.degraded_latency_ms:
        warnings.append(
            f"response_time: {latency:.0f} ms, above degraded_latency_ms {spec.degraded_latency_ms:g}"
        )
    return outcome(True, None, "; ".join(warnings) if warnings else None)


def judge_answer(outcome: CheckOutcome, conditions: Sequence[Condition], answer: Answer) -> CheckOutcome:
    """A passed probe of another kind (websocket, dns, tcp) after its conditions: each failing
    one is named in ``error`` (joined by ``; ``), failing ``warn:`` ones make it ``degraded``.
    ``answer`` holds what the kind offers; its response time is the outcome's latency."""
    if not outcome.ok or not conditions:
        return outcome
    if answer.latency_ms is None:
        answer.latency_ms = outcome.latency_ms
    verdict = evaluate(conditions, answer)
    if verdict.failed:
        return dataclasses.replace(outcome, ok=False, error="; ".join(verdict.failed))
    if verdict.warned:
        return dataclasses.replace(outcome, degraded=True, warning="; ".join(verdict.warned))
    return outcome


def cert_days_left(expires: dt.datetime | None, now: dt.datetime | None = None) -> int | None:
    """Whole days until ``expires`` (negative once expired); None without a certificate."""
    if expires is None:
        return None
    if expires.tzinfo is None:  # stored naive, in UTC
        expires = expires.replace(tzinfo=dt.UTC)
    left = expires - (now or dt.datetime.now(dt.UTC))
    return math.floor(left.total_seconds() / 86400)


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


def scrub_secrets(outcome: CheckOutcome, secrets: Sequence[str]) -> CheckOutcome:
    """``outcome`` with the request's secrets (auth, secret headers) masked in its texts."""
    if not secrets or (outcome.error is None and outcome.warning is None):
        return outcome
    error, warning = outcome.error, outcome.warning
    for secret in sorted(secrets, key=len, reverse=True):
        error = error.replace(secret, "***") if error else error
        warning = warning.replace(secret, "***") if warning else warning
    return dataclasses.replace(outcome, error=error, warning=warning)


def _fail(
    started: float, error: str, status: int | None, cert: CertInfo | dt.datetime | None
) -> CheckOutcome:
    # Latency of a failed probe says how long it took to fail; keep it for timeouts
    # and refusals alike so the history shows "refused in 1 ms" vs "hung for 5 s".
    expires = cert.expires_at if isinstance(cert, CertInfo) else cert
    issuer = cert.issuer if isinstance(cert, CertInfo) else None
    return CheckOutcome(
        False, (time.perf_counter() - started) * 1000, status, error, expires, cert_issuer=issuer
    )


async def run_tcp_check(
    host: str,
    port: int,
    timeout: float,
    policy: EgressPolicy | None = None,
    conditions: Sequence[Condition] = (),
) -> CheckOutcome:
    """Open and close one TCP connection; latency is the connect time, the only subject
    ``conditions`` have here (``response_time < 50``). The connection obeys ``policy``
    (default: the process's CHECK_DENY_NETWORKS policy)."""
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
    return judge_answer(CheckOutcome(True, latency, None, None, None), conditions, Answer(latency_ms=latency))
