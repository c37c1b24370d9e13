"""One async sender per channel kind: webhook, Slack, Discord, email, Apprise, PagerDuty.

Call :func:`send` with the channel's kind and config, the :class:`Alert` and a
:class:`Transport`; it never raises for delivery problems, it returns a
:class:`SendResult` and the caller (the delivery worker or CHANNEL_TEST)
decides what happens next:

- ``ok`` — delivered; record the attempt and finish the delivery;
- ``permanent`` — retrying cannot help (4xx other than 429, a redirect, a bad
  address, refused credentials, a certificate that does not verify): stop and
  count it against the channel;
- otherwise transient (5xx, 429, timeout, connection error): retry with
  backoff, honouring ``retry_after`` when the receiver gave one.

Every sender is bounded by ``Transport.timeout`` as a whole, not per socket
operation, and connects only where ``Transport.egress`` (ALERT_DENY_NETWORKS)
allows; a blocked destination is a permanent failure. Error strings are built
here from status codes and exception types, then scrubbed of every secret in
the config (signing secret, SMTP password, header values, the URL itself, whose
path is the credential for Slack and Discord), so they are safe to store in the attempt log and to log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import hmac
import re
import smtplib
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import httpx
import orjson

from app import egress
from app.alerting import apprise_sender, message, pagerduty
from app.alerting.message import Alert
from app.egress import EgressDenied, EgressPolicy

SIGNATURE_HEADER = "X-Watchpost-Signature"
DELIVERY_HEADER = "X-Watchpost-Delivery"
USER_AGENT = "Watchpost-Alerts/1"
MASK = "***"

# How much of a receiver's error body goes into the attempt log.
_SNIPPET_BYTES = 300
# Headers a channel's custom headers may not replace: they carry the body's
# meaning and its signature.
_RESERVED_HEADERS = {
    "content-type",
    "content-length",
    "host",
    SIGNATURE_HEADER.lower(),
    DELIVERY_HEADER.lower(),
}
# Deliberately strict: one @, no spaces or control characters, a dot in the domain.
_ADDRESS = re.compile(r"^[^@\s\x00-\x1f\x7f<>,;]+@[^@\s\x00-\x1f\x7f<>,;]+\.[^@\s\x00-\x1f\x7f<>,;]+$")


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of one attempt; ``error`` is safe to show and store (secrets already masked)."""

    ok: bool
    permanent: bool = False
    status_code: int | None = None
    error: str | None = None
    # Seconds the receiver asked us to wait (HTTP Retry-After), if it said.
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Transport:
    """What senders share: one pooled HTTP client, the overall time budget, the SMTP TLS context."""

    http: httpx.AsyncClient
    timeout: float = 10.0
    # None = the system trust store; tests pass a context trusting their own CA.
    smtp_ssl_context: ssl.SSLContext | None = None
    #: Where sends may connect (ALERT_DENY_NETWORKS); ``http`` must be built with the same.
    egress: EgressPolicy = field(default_factory=lambda: EgressPolicy(setting="ALERT_DENY_NETWORKS"))


def make_http_client(policy: EgressPolicy | None = None) -> httpx.AsyncClient:
    """The HTTP client a worker keeps for its lifetime (close it with ``aclose``).

    Redirects are not followed: a webhook that moved is a configuration error
    to surface, and following a POST redirect could leak the body elsewhere.
    Every connection obeys ``policy`` (none: no restriction).
    """
    return egress.http_client(
        policy or EgressPolicy(), follow_redirects=False, headers={"User-Agent": USER_AGENT}
    )


# --------------------------------------------------------------------- masking


def secrets_of(kind: str, config: Mapping[str, Any]) -> list[str]:
    """Every config value that must never appear in an error, a log line or an API answer."""
    found: list[str] = []
    if kind in ("webhook", "slack", "discord") and config.get("url"):
        found.append(str(config["url"]))
    if kind == "webhook":
        if config.get("secret"):
            found.append(str(config["secret"]))
        headers = config.get("headers") or {}
        if isinstance(headers, Mapping):
            found += [str(v) for v in headers.values() if v]
    if kind == "email" and config.get("password"):
        found.append(str(config["password"]))
    if kind == "apprise":
        found += apprise_sender.secrets_of(apprise_sender.config_urls(config))
    if kind == "pagerduty":
        found += [str(config[k]) for k in ("routing_key", "webhook_secret") if config.get(k)]
    return found


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first, so overlaps mask fully) replaced by ``***``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _failure(
    secrets: list[str],
    error: str,
    *,
    permanent: bool,
    status: int | None = None,
    retry_after: float | None = None,
) -> SendResult:
    return SendResult(
        ok=False,
        permanent=permanent,
        status_code=status,
        error=scrub(error, secrets),
        retry_after=retry_after,
    )


# ------------------------------------------------------------------------ HTTP


def sign(secret: str, body: bytes) -> str:
    """The signature header value for ``body``; receivers recompute it with the channel secret."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _classify_status(status: int) -> bool | None:
    """None for success, else whether the failure is permanent."""
    if 200 <= status < 300:
        return None
    # 429 and 5xx pass; 3xx (never followed) and every other 4xx mean the
    # request itself is wrong.
    return not (status == 429 or status >= 500)


async def _post_json(
    url: str,
    payload: Mapping[str, Any],
    transport: Transport,
    secrets: list[str],
    *,
    extra_headers: Mapping[str, str] | None = None,
    signing_secret: str | None = None,
    delivery_id: int | None = None,
) -> SendResult:
    body = orjson.dumps(payload)
    headers: dict[str, str] = {}
    for name, value in (extra_headers or {}).items():
        if name.lower() not in _RESERVED_HEADERS:
            headers[name] = value
    headers["Content-Type"] = "application/json"
    if signing_secret:
        headers[SIGNATURE_HEADER] = sign(signing_secret, body)
    if delivery_id is not None:
        headers[DELIVERY_HEADER] = str(delivery_id)
    try:
        async with asyncio.timeout(transport.timeout):
            async with transport.http.stream(
                "POST", url, content=body, headers=headers, timeout=transport.timeout
            ) as response:
                status = response.status_code
                verdict = _classify_status(status)
                if verdict is None:
                    return SendResult(ok=True, status_code=status)
                snippet = await _read_snippet(response)
                retry_after = _retry_after(response.headers.get("retry-after"))
    except TimeoutError:
        return _failure(
            secrets, f"the receiver did not answer within {transport.timeout:g}s", permanent=False
        )
    except httpx.TimeoutException:
        return _failure(
            secrets, f"the receiver did not answer within {transport.timeout:g}s", permanent=False
        )
    except httpx.UnsupportedProtocol:
        return _failure(secrets, "the channel URL must start with http:// or https://", permanent=True)
    except httpx.InvalidURL:
        return _failure(secrets, "the channel URL is not a valid URL; update the channel", permanent=True)
    except httpx.TransportError as exc:
        denied = egress.denied_cause(exc)
        if denied is not None:
            # The destination itself is forbidden; retrying cannot change that.
            return _failure(secrets, f"{denied}; update the channel", permanent=True)
        # The exception text can quote the URL; only its type and a scrubbed message go out.
        return _failure(
            secrets, f"could not reach the receiver ({type(exc).__name__}: {exc})", permanent=False
        )
    if 300 <= status < 400:
        error = f"the receiver answered HTTP {status} (a redirect, not followed); update the channel URL"
    else:
        error = f"the receiver answered HTTP {status}" + (f": {snippet}" if snippet else "")
    return _failure(secrets, error, permanent=bool(verdict), status=status, retry_after=retry_after)


async def _read_snippet(response: httpx.Response) -> str:
    data = b""
    async for chunk in response.aiter_raw():
        data += chunk
        if len(data) >= _SNIPPET_BYTES:
            break
    return message.clean(data[:_SNIPPET_BYTES].decode("utf-8", "replace"), _SNIPPET_BYTES)


async def send_webhook(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Generic webhook: JSON POST, optional HMAC-SHA256 signature over the exact body, custom headers."""
    secrets = secrets_of("webhook", config)
    return await _post_json(
        str(config["url"]),
        message.webhook_payload(alert),
        transport,
        secrets,
        extra_headers={str(k): str(v) for k, v in (config.get("headers") or {}).items()},
        signing_secret=config.get("secret") or None,
        delivery_id=alert.delivery_id,
    )


async def send_slack(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Slack incoming webhook (answers 200 ``ok``; 4xx bodies like ``invalid_token`` are permanent)."""
    return await _post_json(
        str(config["url"]), message.slack_payload(alert), transport, secrets_of("slack", config)
    )


async def send_discord(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Discord webhook (answers 204; 429 carries Retry-After)."""
    return await _post_json(
        str(config["url"]), message.discord_payload(alert), transport, secrets_of("discord", config)
    )


# ----------------------------------------------------------------------- email


def valid_address(address: str) -> bool:
    """Whether ``address`` is a bare mailbox we are willing to hand to an SMTP server."""
    return bool(_ADDRESS.match(address))


def build_email(config: Mapping[str, Any], alert: Alert) -> EmailMessage:
    """The mail for ``alert``; the caller has already checked the addresses."""
    mail = EmailMessage()
    mail["From"] = str(config["from"])
    mail["To"] = ", ".join(str(a) for a in config["to"])
    mail["Subject"] = message.subject(alert)
    mail["Date"] = email.utils.format_datetime(alert.at)
    mail["Message-ID"] = email.utils.make_msgid(domain="watchpost.invalid")
    if alert.delivery_id is not None:
        mail[DELIVERY_HEADER] = str(alert.delivery_id)
    mail.set_content(message.text(alert))
    return mail


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to an address checked beforehand, not to a fresh lookup
    of the name (which could answer differently); TLS still verifies the name."""

    def __init__(self, address: str | None, host: str, port: int, **kwargs: Any) -> None:
        self._address = address
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address or host, port, timeout)  # type: ignore[misc, no-any-return]


class _PinnedSMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, address: str | None, host: str, port: int, **kwargs: Any) -> None:
        self._address = address
        super().__init__(host, port, **kwargs)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return super()._get_socket(self._address or host, port, timeout)  # type: ignore[misc, no-any-return]


def _smtp_exchange(
    config: Mapping[str, Any],
    mail: EmailMessage,
    timeout: float,
    context: ssl.SSLContext | None,
    address: str | None = None,
) -> dict[str, tuple[int, bytes]]:
    """The blocking SMTP conversation; runs in a worker thread. Returns refused recipients.
    ``address``: the IP to connect to (already allowed by the egress policy); None = ``host``."""
    host, port = str(config["host"]), int(config["port"])
    security = config.get("security", "starttls")
    ctx = context or ssl.create_default_context()
    client: smtplib.SMTP
    if security == "tls":
        client = _PinnedSMTP_SSL(address, host, port, timeout=timeout, context=ctx)
    else:
        client = _PinnedSMTP(address, host, port, timeout=timeout)
    with client:
        if security == "starttls":
            client.starttls(context=ctx)
        if config.get("username"):
            client.login(str(config["username"]), str(config.get("password") or ""))
        return client.send_message(
            mail, from_addr=str(config["from"]), to_addrs=[str(a) for a in config["to"]]
        )


def _smtp_failure(exc: Exception, secrets: list[str]) -> SendResult:
    """Map an smtplib/socket failure to a result: 5xx replies and config mismatches are permanent."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        refused = ", ".join(f"{addr} ({code})" for addr, (code, _) in exc.recipients.items())
        permanent = all(code >= 500 for code in codes)
        return _failure(secrets, f"the mail server refused every recipient: {refused}", permanent=permanent)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _failure(
            secrets,
            f"the mail server rejected the username or password ({exc.smtp_code}); update the channel",
            permanent=True,
        )
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return _failure(
            secrets,
            f"the mail server does not support what the channel asks for ({exc}); "
            "check the channel's security and credentials",
            permanent=True,
        )
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = (
            exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
        )
        return _failure(
            secrets,
            f"the mail server answered {exc.smtp_code}: {message.clean(str(reply))}",
            permanent=exc.smtp_code >= 500,
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _failure(
            secrets,
            "the mail server's TLS certificate does not verify; fix the server or the channel's host",
            permanent=True,
        )
    if isinstance(exc, TimeoutError):
        return _failure(secrets, "the mail server did not answer in time", permanent=False)
    return _failure(
        secrets, f"could not talk to the mail server ({type(exc).__name__}: {exc})", permanent=False
    )


async def send_email(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Email over SMTP (``security``: ``starttls`` | ``tls`` | ``none``), via smtplib in a thread."""
    secrets = secrets_of("email", config)
    addresses = [str(config.get("from", "")), *(str(a) for a in config.get("to") or [])]
    bad = [a for a in addresses if not valid_address(a)]
    if bad or not config.get("to"):
        what = ", ".join(repr(a) for a in bad) if bad else "an empty recipient list"
        return _failure(secrets, f"{what} is not a valid email address; update the channel", permanent=True)
    mail = build_email(config, alert)
    # smtplib's timeout bounds each socket operation; a conversation has a
    # handful of them, so the whole exchange gets a few times that.
    try:
        async with asyncio.timeout(transport.timeout * 3):
            address = None
            if transport.egress.active:
                allowed = await transport.egress.resolve(str(config["host"]), int(config["port"]))
                if not allowed:
                    raise OSError(f"{config['host']} has no address")
                address = allowed[0]
            refused = await asyncio.to_thread(
                _smtp_exchange, config, mail, transport.timeout, transport.smtp_ssl_context, address
            )
    except EgressDenied as exc:
        return _failure(secrets, f"{exc}; update the channel", permanent=True)
    except (smtplib.SMTPException, OSError) as exc:  # OSError covers socket, ssl and timeouts
        return _smtp_failure(exc, secrets)
    if refused:
        # Delivered to some recipients; retrying would duplicate it for the others.
        listed = ", ".join(f"{addr} ({code})" for addr, (code, _) in refused.items())
        return SendResult(
            ok=True, status_code=250, error=scrub(f"some recipients were refused: {listed}", secrets)
        )
    return SendResult(ok=True, status_code=250)


# --------------------------------------------------------------------- apprise


async def send_apprise(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Every Apprise URL of the channel (see :mod:`app.alerting.apprise_sender`)."""
    urls = apprise_sender.config_urls(config)
    secrets = secrets_of("apprise", config)
    title, body = apprise_sender.title_and_body(alert)
    outcome = await apprise_sender.notify(
        urls, title, body, timeout=transport.timeout, policy=transport.egress
    )
    error = outcome.get("error")
    if outcome["ok"]:
        return SendResult(ok=True, error=scrub(error, secrets) if error else None)
    return _failure(
        secrets,
        str(error or "Apprise reported a failure"),
        permanent=bool(outcome.get("permanent")),
        status=outcome.get("status"),
    )


# ------------------------------------------------------------------- pagerduty


async def send_pagerduty(config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """PagerDuty Events v2 (see :mod:`app.alerting.pagerduty`): 202 accepted, 400 permanent,
    429 and 5xx retried."""
    secrets = secrets_of("pagerduty", config)
    url = str(config["events_url"])
    key = str(config["routing_key"])
    severity = str(config.get("severity") or "critical")
    if alert.kind == "test":
        test_key = f"watchpost-test-{uuid.uuid4().hex[:12]}"
        first = await _post_json(
            url, pagerduty.event(key, "trigger", test_key, alert, severity), transport, secrets
        )
        if not first.ok:
            return first
        return await _post_json(
            url, pagerduty.event(key, "resolve", test_key, alert, severity), transport, secrets
        )
    event_action = pagerduty.action(alert)
    if event_action is None:
        return SendResult(
            ok=True, error="nothing to send: PagerDuty follows incidents (trigger, acknowledge, resolve)"
        )
    body = pagerduty.event(key, event_action, pagerduty.dedup_key(alert), alert, severity)
    return await _post_json(url, body, transport, secrets)


# -------------------------------------------------------------------- registry

Sender = Callable[[Mapping[str, Any], Alert, Transport], Awaitable[SendResult]]

SENDERS: dict[str, Sender] = {
    "webhook": send_webhook,
    "slack": send_slack,
    "discord": send_discord,
    "email": send_email,
    "apprise": send_apprise,
    "pagerduty": send_pagerduty,
}


async def send(kind: str, config: Mapping[str, Any], alert: Alert, transport: Transport) -> SendResult:
    """Deliver ``alert`` through a channel of ``kind``; the module docstring says what to do next."""
    sender = SENDERS.get(kind)
    if sender is None:
        return SendResult(ok=False, permanent=True, error=f"unknown channel kind {kind!r}")
    return await sender(config, alert, transport)
