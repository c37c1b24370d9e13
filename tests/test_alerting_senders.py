"""Senders against real loopback receivers: what arrives, how failures are classified, no leaked secrets."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.alerting import message, senders
from app.alerting.message import Alert
from app.alerting.senders import SendResult, Transport
from tests.receivers import HttpReceiver, Reply, SmtpReceiver

AT = dt.datetime(2026, 11, 22, 4, 30, 5, tzinfo=dt.UTC)
ALERT = Alert(
    "checkout-api", "down", AT, monitor_id=7, previous_state="up", reason="HTTP 503", delivery_id=99
)
SECRET = "s3cr3t-signing-key-value"
PASSWORD = "correct horse battery staple"


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver() as rx:
        yield rx


@pytest.fixture
async def transport() -> AsyncIterator[Transport]:
    client = senders.make_http_client()
    try:
        yield Transport(http=client, timeout=2.0)
    finally:
        await client.aclose()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_no_secret(result: SendResult, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in (result.error or ""), f"secret leaked into {result.error!r}"


# ---------------------------------------------------------------------- webhook


async def test_webhook_posts_json_signed_with_hmac_the_receiver_can_verify(
    receiver: HttpReceiver, transport: Transport
) -> None:
    config = {"url": f"{receiver.url}/hooks/in", "secret": SECRET, "headers": {"X-Team": "ops"}}
    result = await senders.send("webhook", config, ALERT, transport)
    assert result == SendResult(ok=True, status_code=200)
    [req] = receiver.requests
    assert (req.method, req.path) == ("POST", "/hooks/in")
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-team"] == "ops"
    assert req.headers["x-watchpost-delivery"] == "99"
    # The receiver's side of the contract: HMAC-SHA256 of the exact body bytes.
    expected = "sha256=" + hmac.new(SECRET.encode(), req.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(req.headers["x-watchpost-signature"], expected)
    assert req.json() == message.webhook_payload(ALERT)


async def test_a_wrong_secret_does_not_verify(receiver: HttpReceiver, transport: Transport) -> None:
    await senders.send("webhook", {"url": receiver.url, "secret": SECRET}, ALERT, transport)
    [req] = receiver.requests
    forged = "sha256=" + hmac.new(b"other", req.body, hashlib.sha256).hexdigest()
    assert req.headers["x-watchpost-signature"] != forged


async def test_unsigned_webhook_has_no_signature_and_custom_headers_cannot_forge_one(
    receiver: HttpReceiver, transport: Transport
) -> None:
    config = {
        "url": receiver.url,
        "headers": {"X-Watchpost-Signature": "sha256=forged", "Content-Type": "x/y"},
    }
    assert (await senders.send("webhook", config, ALERT, transport)).ok
    [req] = receiver.requests
    assert "x-watchpost-signature" not in req.headers
    assert req.headers["content-type"] == "application/json"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(receiver: HttpReceiver, transport: Transport, status: int) -> None:
    receiver.fail(1, status=status)
    result = await senders.send("webhook", {"url": receiver.url}, ALERT, transport)
    assert (result.ok, result.permanent, result.status_code) == (False, False, status)
    assert result.error is not None and str(status) in result.error


async def test_429_is_transient_and_carries_retry_after(receiver: HttpReceiver, transport: Transport) -> None:
    receiver.script(Reply(status=429, body=b"slow down", headers={"Retry-After": "7"}))
    result = await senders.send("webhook", {"url": receiver.url}, ALERT, transport)
    assert (result.ok, result.permanent, result.status_code, result.retry_after) == (False, False, 429, 7.0)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_client_errors_are_permanent(receiver: HttpReceiver, transport: Transport, status: int) -> None:
    receiver.fail(1, status=status, body=b"invalid_payload")
    result = await senders.send("webhook", {"url": receiver.url}, ALERT, transport)
    assert (result.ok, result.permanent, result.status_code) == (False, True, status)
    assert result.error is not None and "invalid_payload" in result.error


async def test_redirects_are_not_followed_and_are_permanent(
    receiver: HttpReceiver, transport: Transport
) -> None:
    receiver.script(Reply(status=301, headers={"Location": f"{receiver.url}/elsewhere"}))
    result = await senders.send("webhook", {"url": receiver.url}, ALERT, transport)
    assert (result.ok, result.permanent, result.status_code) == (False, True, 301)
    assert len(receiver.requests) == 1


async def test_a_hanging_receiver_times_out_within_the_budget(receiver: HttpReceiver) -> None:
    receiver.hang(1)
    client = senders.make_http_client()
    try:
        started = time.monotonic()
        result = await senders.send("webhook", {"url": receiver.url}, ALERT, Transport(client, timeout=0.5))
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert (result.ok, result.permanent) == (False, False)
    assert result.error is not None and "did not answer within 0.5s" in result.error
    assert elapsed < 5


async def test_connection_refused_is_transient_and_the_url_token_stays_hidden(transport: Transport) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/webhooks/123/TOKENPART-abcdef"
    result = await senders.send("discord", {"url": url}, ALERT, transport)
    assert (result.ok, result.permanent) == (False, False)
    assert_no_secret(result, "TOKENPART-abcdef", url)


async def test_secrets_echoed_by_a_receiver_are_masked(receiver: HttpReceiver, transport: Transport) -> None:
    receiver.fail(1, status=403, body=f"bad signature key {SECRET} for bearer abc-header-token".encode())
    config = {"url": receiver.url, "secret": SECRET, "headers": {"Authorization": "abc-header-token"}}
    result = await senders.send("webhook", config, ALERT, transport)
    assert result.permanent
    assert_no_secret(result, SECRET, "abc-header-token")
    assert result.error is not None and "***" in result.error


async def test_bad_urls_are_permanent(transport: Transport) -> None:
    for url in ("ftp://127.0.0.1/x", "not a url"):
        result = await senders.send("webhook", {"url": url}, ALERT, transport)
        assert (result.ok, result.permanent) == (False, True), url


async def test_unknown_kind_is_permanent(transport: Transport) -> None:
    result = await senders.send("pager", {}, ALERT, transport)
    assert result.permanent and result.error == "unknown channel kind 'pager'"


# ---------------------------------------------------------------- slack, discord


async def test_slack_gets_its_text_shape(receiver: HttpReceiver, transport: Transport) -> None:
    assert (await senders.send("slack", {"url": f"{receiver.url}/services/T/B/X"}, ALERT, transport)).ok
    [req] = receiver.requests
    assert req.path == "/services/T/B/X"
    assert req.json() == {"text": message.text(ALERT)}


async def test_discord_gets_content_without_mentions_and_204_is_success(transport: Transport) -> None:
    with HttpReceiver(default=Reply(status=204, body=b"")) as rx:
        result = await senders.send("discord", {"url": f"{rx.url}/api/webhooks/1/tok"}, ALERT, transport)
        assert result == SendResult(ok=True, status_code=204)
        [req] = rx.requests
    assert req.json() == {"content": message.text(ALERT), "allowed_mentions": {"parse": []}}


# ------------------------------------------------------------------------ email


def email_config(rx: SmtpReceiver, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": rx.port,
        "security": rx.security,
        "username": "alerts",
        "password": PASSWORD,
        "from": "watchpost@example.com",
        "to": ["oncall@example.com", "lead@example.com"],
    }
    return config | overrides


@pytest.mark.parametrize("security", ["none", "starttls", "tls"])
async def test_email_arrives_with_subject_and_body(security: str) -> None:
    with SmtpReceiver(security=security, credentials=("alerts", PASSWORD)) as rx:
        client = senders.make_http_client()
        try:
            transport = Transport(client, timeout=5.0, smtp_ssl_context=rx.client_ssl_context)
            result = await senders.send("email", email_config(rx), ALERT, transport)
        finally:
            await client.aclose()
        assert result == SendResult(ok=True, status_code=250)
        [mail] = rx.mails
    assert mail.login == "alerts"
    assert mail.mail_from == "watchpost@example.com"
    assert mail.rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert mail.subject == "[Watchpost] checkout-api is DOWN"
    assert mail.text.replace("\r\n", "\n").strip() == message.text(ALERT)
    assert mail.message["X-Watchpost-Delivery"] == "99"


async def test_tls_to_an_untrusted_certificate_is_permanent(transport: Transport) -> None:
    with SmtpReceiver(security="tls") as rx:
        # The system trust store does not know the receiver's self-signed certificate.
        result = await senders.send("email", email_config(rx, username=""), ALERT, transport)
        assert (result.ok, result.permanent) == (False, True)
        assert result.error is not None and "certificate" in result.error
        assert rx.mails == []


async def test_wrong_password_is_permanent_and_never_echoed(transport: Transport) -> None:
    with SmtpReceiver(credentials=("alerts", "the-real-one")) as rx:
        result = await senders.send("email", email_config(rx), ALERT, transport)
        assert (result.ok, result.permanent) == (False, True)
        assert_no_secret(result, PASSWORD)
        assert rx.mails == []


async def test_refused_recipients_are_permanent_and_busy_server_is_transient(transport: Transport) -> None:
    with SmtpReceiver() as rx:
        rx.reject = {"oncall@example.com", "lead@example.com"}
        result = await senders.send("email", email_config(rx, username=""), ALERT, transport)
        assert (result.ok, result.permanent) == (False, True)
        assert result.error is not None and "oncall@example.com (550)" in result.error

        rx.reject = set()
        rx.busy = True
        result = await senders.send("email", email_config(rx, username=""), ALERT, transport)
        assert (result.ok, result.permanent) == (False, False)
        assert rx.mails == []


async def test_partly_refused_recipients_still_count_as_delivered(transport: Transport) -> None:
    with SmtpReceiver() as rx:
        rx.reject = {"lead@example.com"}
        result = await senders.send("email", email_config(rx, username=""), ALERT, transport)
        assert result.ok and result.error is not None and "lead@example.com (550)" in result.error
        await rx.wait_for(1)
        assert rx.mails[0].rcpt_tos == ["oncall@example.com"]


@pytest.mark.parametrize(
    "overrides",
    [{"to": ["not-an-address"]}, {"to": []}, {"from": "x@y.com\r\nBcc: z@w.com"}, {"to": ["a b@c.com"]}],
)
async def test_bad_addresses_are_permanent_without_connecting(
    transport: Transport, overrides: dict[str, Any]
) -> None:
    with SmtpReceiver() as rx:
        result = await senders.send("email", email_config(rx, **overrides), ALERT, transport)
        assert (result.ok, result.permanent) == (False, True)
        assert result.error is not None and "valid email address" in result.error
        assert rx.mails == []


async def test_unreachable_mail_server_is_transient(transport: Transport) -> None:
    config = {
        "host": "127.0.0.1",
        "port": closed_port(),
        "security": "none",
        "username": "alerts",
        "password": PASSWORD,
        "from": "watchpost@example.com",
        "to": ["oncall@example.com"],
    }
    result = await senders.send("email", config, ALERT, transport)
    assert (result.ok, result.permanent) == (False, False)
    assert_no_secret(result, PASSWORD)
