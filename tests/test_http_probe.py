"""The collector's HTTP fast path (app.monitoring.http_probe) against real loopback servers.

Every answer the fast path takes on itself must give the outcome the full client
(httpx, :func:`run_http_check`) gives for the same answer: same verdict, status and
sentence. The raw target below sends exact bytes, so framings httpx hides (chunked,
gzip, a body ended by closing) are all exercised.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from app.egress import EgressPolicy
from app.models.monitor import Monitor
from app.monitoring import http_probe
from app.monitoring.checks import CheckOutcome, HttpSpec, parse_expected_status, run_http_check
from app.monitoring.collector import probe
from app.settings import parse_networks


def _reply(status: str, headers: list[str], body: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n").encode() + body


def _chunked(*parts: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


GZIPPED = gzip.compress(b"all systems operational " * 10)

#: path -> exact bytes sent back (then the connection is closed).
CANNED: dict[str, bytes] = {
    "/ok": _reply("200 OK", ["Content-Length: 24"], b"all systems operational."),
    "/empty": _reply("204 No Content", []),
    "/error": _reply("500 Internal Server Error", ["Content-Length: 4"], b"boom"),
    "/chunked": _reply(
        "200 OK", ["Transfer-Encoding: chunked"], _chunked(b"all systems ", b"opera", b"tional")
    ),
    "/gzip": _reply("200 OK", ["Content-Encoding: gzip", f"Content-Length: {len(GZIPPED)}"], GZIPPED),
    "/close": _reply("200 OK", ["Connection: close"], b"body until the end: operational"),
    "/short": _reply("200 OK", ["Content-Length: 100"], b"only part of it"),
    "/garbage": b"SMTP ready\r\n\r\n",
    "/big": _reply("200 OK", ["Content-Length: 200000"], b"x" * 200_000 + b""),
    "/moved": _reply("302 Found", ["Location: /ok", "Content-Length: 0"]),
    "/head-length": _reply("200 OK", ["Content-Length: 5000"]),
}


@dataclass
class RawTarget:
    """Answers each request with the canned bytes of its path; counts requests per path."""

    port: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    heads: list[bytes] = field(default_factory=list)
    delay: float = 0.0
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def stop(self) -> None:
        """Close the server and end the handlers still holding connections (/hang, HEAD), so
        every transport is closed on this loop rather than found unclosed by a later test."""
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await asyncio.sleep(0.01)  # the transports' close callbacks run

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            method, path = head.split(b" ", 2)[:2]
            self.hits[path.decode()] += 1
            if path == b"/hang":
                await asyncio.sleep(30)
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = CANNED[path.decode()]
            if method == b"HEAD":
                answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                writer.write(answer)
                await writer.drain()
                await asyncio.sleep(1)  # keep it open: the probe must not wait for a body
            else:
                writer.write(answer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)


@pytest.fixture
async def raw() -> AsyncIterator[RawTarget]:
    target = RawTarget()
    target.server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    target.port = target.server.sockets[0].getsockname()[1]
    try:
        yield target
    finally:
        await target.stop()


def _spec(url: str, **kw: object) -> HttpSpec:
    return HttpSpec(url, timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]


async def _fast(spec: HttpSpec, policy: EgressPolicy | None = None) -> CheckOutcome | None:
    plan = http_probe.plan(spec)
    assert plan is not None, spec
    return await http_probe.run(plan, spec, policy)


def test_plan_takes_only_the_simple_case() -> None:
    assert http_probe.plan(_spec("http://127.0.0.1:8080/health?x=1")) is not None
    assert http_probe.plan(_spec("http://example.com/", method="HEAD")) is not None
    for spec in (
        _spec("https://127.0.0.1/"),  # TLS: verification and the certificate's expiry
        _spec("http://127.0.0.1/", method="POST"),
        _spec("http://user:secret@127.0.0.1/"),  # credentials become an Authorization header
        _spec("http://127.0.0.1/", headers={"X-Token": "t"}),
        _spec("http://bücher.example/"),
        _spec("http://127.0.0.1/a b"),
        _spec("http://127.0.0.1:99999/"),
    ):
        assert http_probe.plan(spec) is None, spec
    request = http_probe.plan(_spec("http://[::1]:8080/p?q=1"))
    assert request is not None and request.host == "::1" and request.literal
    assert request.request.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: [::1]:8080\r\n")


@pytest.mark.parametrize(
    ("path", "keyword", "ok", "status", "error"),
    [
        ("/ok", "operational", True, 200, None),
        ("/ok", "degraded", False, 200, "keyword 'degraded' not found in the body"),
        ("/empty", None, True, 204, None),
        ("/error", None, False, 500, "status 500, expected 200-399"),
        ("/chunked", "operational", True, 200, None),  # the keyword spans two chunks
        ("/gzip", "operational", True, 200, None),
        ("/close", "operational", True, 200, None),
        ("/short", None, False, 200, http_probe.INVALID_RESPONSE),
        ("/garbage", None, False, None, http_probe.INVALID_RESPONSE),
    ],
)
async def test_same_outcome_as_the_full_client(
    raw: RawTarget, path: str, keyword: str | None, ok: bool, status: int | None, error: str | None
) -> None:
    spec = _spec(raw.url(path), keyword=keyword)
    fast = await _fast(spec)
    full = await run_http_check(spec)
    assert fast is not None
    assert (fast.ok, fast.status_code, fast.error) == (ok, status, error)
    assert (full.ok, full.status_code, full.error) == (ok, status, error)
    assert fast.latency_ms is not None and fast.latency_ms >= 0
    assert raw.hits[path] == 2  # one request each, no retry


async def test_request_is_one_plain_get(raw: RawTarget) -> None:
    await _fast(_spec(raw.url("/ok?probe=1")))
    head = raw.heads[-1].decode()
    assert head.startswith("GET /ok?probe=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{raw.port}\r\n" in head
    assert "Accept-Encoding: identity\r\n" in head and "User-Agent: Watchpost/1" in head


async def test_body_limit_and_keyword_beyond_it(raw: RawTarget) -> None:
    spec = _spec(raw.url("/big"), keyword="never", max_body_bytes=1000)
    out = await _fast(spec)
    assert out is not None and not out.ok
    assert out.error == "keyword 'never' not found in the first 1000 bytes"
    assert out.status_code == 200


async def test_head_does_not_wait_for_a_body(raw: RawTarget) -> None:
    started = time.perf_counter()
    out = await _fast(_spec(raw.url("/head-length"), method="HEAD", timeout=3.0))
    assert out is not None and out.ok and out.status_code == 200
    assert time.perf_counter() - started < 0.9  # the target holds the socket open for 1 s


async def test_latency_is_the_targets_answer_time(raw: RawTarget) -> None:
    raw.delay = 0.2
    out = await _fast(_spec(raw.url("/ok")))
    assert out is not None and out.ok and out.latency_ms is not None
    assert 200 <= out.latency_ms < 2000


async def test_redirect_hands_over_to_the_full_client(raw: RawTarget) -> None:
    spec = _spec(raw.url("/moved"))
    assert await _fast(spec) is None  # a redirect to follow is the full client's job
    no_follow = await _fast(_spec(raw.url("/moved"), follow_redirects=False))
    assert no_follow is not None and no_follow.ok and no_follow.status_code == 302
    # Through the collector's probe: handed over, followed, and the final answer counts.
    monitor = Monitor(tenant_id=1, name="m", kind="http", url=raw.url("/moved"), timeout=5.0)
    monitor.expected_status = ["200"]
    out = await probe(monitor, None)
    assert out.ok and out.status_code == 200, out
    assert raw.hits["/ok"] == 1


async def test_refused_timeout_and_unresolvable(raw: RawTarget) -> None:
    raw.server.close()  # type: ignore[union-attr]
    await raw.server.wait_closed()  # type: ignore[union-attr]
    refused = await _fast(_spec(raw.url("/ok")))
    assert refused is not None and (refused.ok, refused.error) == (False, "connection refused")
    unresolvable = await _fast(_spec("http://no-such-host.invalid/"))
    assert unresolvable is not None and unresolvable.error == "host name could not be resolved"


async def test_timeout_covers_the_whole_exchange(raw: RawTarget) -> None:
    started = time.perf_counter()
    out = await _fast(_spec(raw.url("/hang"), timeout=0.5))
    assert out is not None and not out.ok and out.error == "timed out after 0.5 s"
    assert out.latency_ms is not None and out.latency_ms >= 450
    assert time.perf_counter() - started < 3


async def test_deny_networks_apply_to_literal_and_named_hosts(raw: RawTarget) -> None:
    policy = EgressPolicy(parse_networks("127.0.0.0/8,::1/128"), "CHECK_DENY_NETWORKS")
    literal = await _fast(_spec(raw.url("/ok")), policy)
    assert literal is not None and not literal.ok
    assert literal.error == "could not connect: destination 127.0.0.1 is blocked by CHECK_DENY_NETWORKS"
    named = await _fast(_spec(f"http://localhost:{raw.port}/ok"), policy)
    assert named is not None and not named.ok and named.error is not None
    assert named.error.endswith("(localhost) is blocked by CHECK_DENY_NETWORKS")
    assert sum(raw.hits.values()) == 0  # nothing ever connected


async def test_expected_status_ranges(raw: RawTarget) -> None:
    spec = _spec(raw.url("/error"), expected_status=parse_expected_status([200, "500-503"]))
    out = await _fast(spec)
    assert out is not None and out.ok and out.status_code == 500


async def test_many_at_once_all_answered(raw: RawTarget) -> None:
    outs = await asyncio.gather(
        *(_fast(_spec(raw.url("/chunked"), keyword="operational")) for _ in range(200))
    )
    assert all(o is not None and o.ok for o in outs)
    assert raw.hits["/chunked"] == 200


def test_on_uvloop_too() -> None:
    """The server runs on uvloop (uvicorn's default when installed), whose transports differ."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[CheckOutcome | None]:
        target = RawTarget()
        target.server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
        target.port = target.server.sockets[0].getsockname()[1]
        try:
            return [
                await _fast(_spec(target.url("/chunked"), keyword="operational")),
                await _fast(_spec(target.url("/error"))),
                await _fast(_spec(target.url("/close"), keyword="operational")),
            ]
        finally:
            await target.stop()

    chunked, error, close = uvloop.run(scenario())
    assert chunked is not None and chunked.ok and chunked.status_code == 200
    assert error is not None and error.error == "status 500, expected 200-399"
    assert close is not None and close.ok
