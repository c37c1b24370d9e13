"""Real alert receivers on loopback for the alerting tests.

``HttpReceiver`` is a tiny HTTP/1.1 server that records every request it gets
(method, path, headers, body) and answers from a script: "fail with 500 twice,
then 200", "answer 429 once", "hang for the next request". It stands in for a
webhook endpoint, a Slack incoming webhook and a Discord webhook.

``SmtpReceiver`` is an aiosmtpd server that records every mail (envelope and
parsed message), can require AUTH, offer STARTTLS or speak implicit TLS, and
can refuse recipients.

Both run their own event loop in a daemon thread, so they keep answering while
a test's loop is busy (or blocked), and they work from sync and async tests
alike. Use them as context managers; the records are thread-safe snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import ssl
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

# Long enough that nothing a test waits on finishes first; the receiver cancels
# hung handlers when it stops.
_HANG_SECONDS = 3600.0

_REASONS = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    410: "Gone",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``hang=True`` reads the request and never answers."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as it arrived (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> Any:
        return orjson.loads(self.body)


class _Waitable:
    """Polling helpers shared by both receivers (records live in another thread)."""

    def _count(self) -> int:
        raise NotImplementedError

    async def wait_for(self, count: int, within: float = 20.0) -> None:
        """Wait until at least ``count`` records exist; fail the test with the count seen otherwise."""
        deadline = time.monotonic() + within
        while self._count() < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected at least {count} records within {within}s, got {self._count()}"
                )
            await asyncio.sleep(0.05)

    async def stays_at(self, count: int, seconds: float) -> None:
        """Assert that exactly ``count`` records exist for ``seconds`` (no late duplicates)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self._count() == count, f"expected exactly {count} records, got {self._count()}"
            await asyncio.sleep(0.05)
        assert self._count() == count, f"expected exactly {count} records, got {self._count()}"


class HttpReceiver(_Waitable):
    """Records HTTP requests and answers from a script (default: 200 ``ok``)."""

    def __init__(self, default: Reply | None = None, *, host: str = "127.0.0.1") -> None:
        # Any 127.x.y.z works on Linux loopback; egress tests use a second one.
        self.host = host
        self.default = default or Reply()
        self._script: deque[Reply] = deque()
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- scripting ---------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, then with the default."""
        with self._lock:
            self._script.extend(replies)

    def fail(self, times: int, status: int = 500, body: bytes = b"failing", **headers: str) -> None:
        """Answer the next ``times`` requests with ``status``."""
        self.script(*[Reply(status=status, body=body, headers=dict(headers))] * times)

    def hang(self, times: int = 1) -> None:
        """Read the next ``times`` requests and never answer them."""
        self.script(*[Reply(hang=True)] * times)

    # -- records -----------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def _count(self) -> int:
        with self._lock:
            return len(self._requests)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> HttpReceiver:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True, name="http-receiver")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the HTTP receiver did not start within 10 s")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    def __enter__(self) -> HttpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._server = loop.run_until_complete(asyncio.start_server(self._handle, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _reply_for(self, request: ReceivedRequest) -> Reply:
        """The answer to ``request``: scripted, else the default (subclasses may look at it)."""
        return self._next_reply()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                request = await _read_request(reader)
                if request is None:
                    return
                with self._lock:
                    self._requests.append(request)
                reply = self._reply_for(request)
                if reply.hang:
                    await asyncio.sleep(_HANG_SECONDS)
                    return
                writer.write(_encode_reply(reply))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class PagerDutyReceiver(HttpReceiver):
    """A local PagerDuty Events API v2 (``POST /v2/enqueue``): validates each event as
    PagerDuty does (routing key, action, dedup key, trigger payload), answers 202 with the
    dedup key or 400 ``invalid event``, and keeps each alert's life cycle by dedup key
    (``triggered`` → ``acknowledged`` → ``resolved``). Scripted replies still go first."""

    ACTIONS = ("trigger", "acknowledge", "resolve")
    SEVERITIES = ("critical", "error", "warning", "info")

    def __init__(self, routing_key: str) -> None:
        super().__init__()
        self.routing_key = routing_key
        #: dedup_key -> the actions it went through, in order.
        self.alerts: dict[str, list[str]] = {}

    def __enter__(self) -> PagerDutyReceiver:
        self.start()
        return self

    @property
    def events_url(self) -> str:
        return f"{self.url}/v2/enqueue"

    def _reply_for(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        if request.method != "POST" or request.path != "/v2/enqueue":
            return Reply(404, b'{"status":"not found"}')
        try:
            event = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return self._invalid("body is not JSON")
        if not isinstance(event, dict):
            return self._invalid("event must be an object")
        errors = []
        if event.get("routing_key") != self.routing_key:
            errors.append("routing_key is invalid")
        action = event.get("event_action")
        if action not in self.ACTIONS:
            errors.append("event_action is invalid")
        key = event.get("dedup_key")
        if action != "trigger" and not key:
            errors.append("dedup_key is required for acknowledge and resolve")
        if action == "trigger":
            payload = event.get("payload") or {}
            for name in ("summary", "source", "severity"):
                if not payload.get(name):
                    errors.append(f"payload.{name} is required")
            if payload.get("severity") not in self.SEVERITIES:
                errors.append("payload.severity is invalid")
            if len(str(payload.get("summary", ""))) > 1024:
                errors.append("payload.summary is too long")
        if errors:
            return self._invalid(*errors)
        with self._lock:
            self.alerts.setdefault(str(key), []).append(str(action))
        body = {"status": "success", "message": "Event processed", "dedup_key": key}
        return Reply(202, orjson.dumps(body), {"content-type": "application/json"})

    @staticmethod
    def _invalid(*errors: str) -> Reply:
        body = {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}
        return Reply(400, orjson.dumps(body), {"content-type": "application/json"})


async def _read_request(reader: asyncio.StreamReader) -> ReceivedRequest | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed a kept-alive connection
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return ReceivedRequest(method, path, headers, body, time.time())


def _encode_reply(reply: Reply) -> bytes:
    head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
    headers = {"content-length": str(len(reply.body)), "content-type": "text/plain"} | {
        k.lower(): v for k, v in reply.headers.items()
    }
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body


# --------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class ReceivedMail:
    """One accepted mail: envelope, parsed message and the AUTH login used (if any)."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "the mail has no text/plain part"
        return str(part.get_content())  # type: ignore[attr-defined]


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.receiver.reject:
            return "550 5.1.1 mailbox unavailable"
        if self.receiver.busy:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        mail = ReceivedMail(str(envelope.mail_from), list(envelope.rcpt_tos), message, login)
        with self.receiver._lock:
            self.receiver._mails.append(mail)
        return "250 Message accepted"


class _Controller(Controller):
    """aiosmtpd's controller bound to an ephemeral port (it only knows fixed ones)."""

    def _trigger_server(self) -> None:
        server = self.server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpReceiver(_Waitable):
    """Records mails. ``security``: ``none`` | ``starttls`` | ``tls``; ``credentials`` turns on AUTH."""

    def __init__(self, *, security: str = "none", credentials: tuple[str, str] | None = None) -> None:
        self.security = security
        self.credentials = credentials
        self.reject: set[str] = set()  # recipients answered with a permanent 550
        self.busy = False  # answer every recipient with a transient 451
        # Every AUTH attempt as (login, password), successful or not.
        self.logins: list[tuple[str, str]] = []
        self._mails: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller: _Controller | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # A client context trusting this receiver's self-signed certificate.
        self.client_ssl_context: ssl.SSLContext | None = None

    @property
    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    def _count(self) -> int:
        with self._lock:
            return len(self._mails)

    @property
    def port(self) -> int:
        assert self._controller is not None
        return int(self._controller.port)

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            with self._lock:
                self.logins.append((auth_data.login.decode(), auth_data.password.decode()))
        ok = (
            isinstance(auth_data, LoginPassword)
            and self.credentials is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> SmtpReceiver:
        kwargs: dict[str, Any] = {}
        server_ctx: ssl.SSLContext | None = None
        if self.security in ("starttls", "tls"):
            server_ctx, self.client_ssl_context = self._make_tls()
        if self.security == "starttls":
            kwargs["tls_context"] = server_ctx
            kwargs["require_starttls"] = True
        elif self.security == "tls":
            kwargs["ssl_context"] = server_ctx
        if self.credentials is not None:
            kwargs["authenticator"] = self._authenticate
            # aiosmtpd only counts STARTTLS as TLS (not implicit TLS), and warns
            # when AUTH is enforced without it; elsewhere AUTH is offered, not enforced.
            kwargs["auth_require_tls"] = self.security == "starttls"
            kwargs["auth_required"] = self.security == "starttls"
        self._controller = _Controller(_Handler(self), hostname="127.0.0.1", port=0, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> SmtpReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _make_tls(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """A throwaway self-signed certificate for 127.0.0.1: (server context, trusting client context)."""
        cert_pem, key_pem = _self_signed_cert()
        self._tmp = tempfile.TemporaryDirectory()
        cert_file = Path(self._tmp.name, "cert.pem")
        key_file = Path(self._tmp.name, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_file, key_file)
        client = ssl.create_default_context(cadata=cert_pem.decode())
        return server, client


def _self_signed_cert() -> tuple[bytes, bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


__all__ = [
    "HttpReceiver",
    "ReceivedMail",
    "ReceivedRequest",
    "Reply",
    "SmtpReceiver",
]
