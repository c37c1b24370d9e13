"""The ``websocket`` kind: open a WebSocket to ``url`` (ws:// or wss://), optionally send
one message and check the first answer, then close cleanly.

Options: ``subprotocol`` (asked for, and the server must accept it), ``headers``
(sent with the handshake; values are secrets, shown as ``"***"``; sending ``"***"``
back in an update keeps the stored value), ``send`` (a text message sent after
the handshake), ``expect`` (a substring the first answer must contain) and
``expect_json`` (an object: the first answer, parsed as JSON, must hold each of
its keys with an equal value, nested objects compared the same way). ``verify_tls``
applies to wss://. Latency is handshake plus exchange. The server's address is
the destination CHECK_DENY_NETWORKS judges.

After ``expect`` and ``expect_json``, the monitor's ``conditions`` see the first
answer: ``body`` (its text), ``$.json.path`` into it and ``response_time``; a
condition on the body makes the check wait for that first answer.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from app.egress import EgressDenied, EgressPolicy
from app.monitoring.checks import CheckOutcome, judge_answer, scrub_secrets
from app.monitoring.conditions import Answer, parse_all
from app.monitoring.kinds.common import (
    MASK,
    Bad,
    allowed_address,
    failed,
    known_options,
    passed,
    with_deadline,
)
from app.urls import valid_hostname

OPTIONS = {"subprotocol", "headers", "send", "expect", "expect_json"}
#: The first answer is read up to this size; a larger one fails the check.
MAX_MESSAGE_BYTES = 1024 * 1024
_TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_RESERVED_HEADERS = {"host", "upgrade", "connection", "content-length"}

SCHEMA: dict[str, Any] = {
    "subprotocol": {"type": ["string", "null"], "minLength": 1, "maxLength": 100},
    "headers": {
        "type": "object",
        "maxProperties": 20,
        "additionalProperties": {"type": "string", "maxLength": 2000},
    },
    "send": {"type": ["string", "null"], "maxLength": 10000},
    "expect": {"type": ["string", "null"], "maxLength": 500},
    "expect_json": {"type": ["object", "null"], "maxProperties": 50},
}


def _token(text: str) -> bool:
    return bool(text) and len(text) <= 100 and all(c in _TOKEN for c in text)


def validate(values: Mapping[str, Any], bad: Bad) -> None:
    options = values.get("options") or {}
    known_options("websocket", options, OPTIONS, bad)
    url = values.get("url")
    if not url:
        bad("url", "a websocket monitor needs a url, e.g. wss://example.com/socket")
    else:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            bad("url", f"url: not a valid URL ({exc})")
        else:
            if parts.scheme not in ("ws", "wss"):
                bad("url", "url: must start with ws:// or wss://")
            elif not parts.hostname or not valid_hostname(parts.hostname.strip("[]")):
                bad("url", "url: must name a host, e.g. wss://example.com/socket")
            elif parts.username or parts.password:
                bad("url", "url: put credentials in options.headers (e.g. Authorization), not in the URL")
    subprotocol = options.get("subprotocol")
    if subprotocol is not None and not _token(subprotocol):
        bad(
            "options.subprotocol", "options.subprotocol: must be a token (letters, digits, -._~ …), no spaces"
        )
    for name, value in (options.get("headers") or {}).items():
        if not _token(name) or name.lower() in _RESERVED_HEADERS or name.lower().startswith("sec-websocket"):
            bad(f"options.headers.{name}", f"options.headers: {name!r} is not a header name that may be set")
        elif value == MASK:
            bad(
                f"options.headers.{name}",
                f"options.headers.{name}: re-enter the value (*** keeps the stored one only in an update "
                "that keeps the url's scheme, host and port)",
            )
        elif any(c in value for c in "\r\n\0"):
            bad(f"options.headers.{name}", f"options.headers.{name}: a header value cannot hold line breaks")
    if options.get("expect_json") is not None and not options.get("expect_json"):
        bad("options.expect_json", "options.expect_json: give at least one key, or leave it out")


def _subset_problem(expected: Any, got: Any, path: str = "$") -> str | None:
    """Why ``got`` does not hold ``expected`` (objects: each expected key, recursively)."""
    if isinstance(expected, dict):
        if not isinstance(got, dict):
            return f"{path}: expected an object, got {_short(got)}"
        for key, value in expected.items():
            if key not in got:
                return f"{path}.{key}: missing"
            problem = _subset_problem(value, got[key], f"{path}.{key}")
            if problem:
                return problem
        return None
    if expected != got or isinstance(expected, bool) != isinstance(got, bool):
        return f"{path}: expected {_short(expected)}, got {_short(got)}"
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


async def run(values: Mapping[str, Any], timeout: float, policy: EgressPolicy) -> CheckOutcome:
    started = time.perf_counter()
    outcome = await with_deadline(timeout, started, _exchange(values, timeout, policy, started))
    # A failing condition quotes the answer, which may echo a secret header value back.
    headers = (values.get("options") or {}).get("headers") or {}
    return scrub_secrets(outcome, [str(v) for v in headers.values() if len(str(v)) >= 3])


async def _exchange(
    values: Mapping[str, Any], timeout: float, policy: EgressPolicy, started: float
) -> CheckOutcome:
    options = values.get("options") or {}
    url = str(values.get("url"))
    subprotocol = options.get("subprotocol")
    conditions = parse_all(values.get("conditions"))
    kwargs: dict[str, Any] = {}
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "wss" and values.get("verify_tls") is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = context
    try:
        if policy.active:
            port = parts.port or (443 if parts.scheme == "wss" else 80)
            kwargs["host"] = await allowed_address(str(parts.hostname), port, policy)
            kwargs["port"] = port
        async with connect(
            url,
            subprotocols=[subprotocol] if subprotocol else None,
            additional_headers=dict(options.get("headers") or {}),
            user_agent_header="Watchpost/1 (health check)",
            proxy=None,
            open_timeout=timeout,
            close_timeout=min(timeout, 5.0),
            ping_interval=None,
            max_size=MAX_MESSAGE_BYTES,
            compression=None,
            **kwargs,
        ) as ws:
            if subprotocol and ws.subprotocol != subprotocol:
                return failed(started, f"server did not accept subprotocol {subprotocol!r}", 101)
            if options.get("send") is not None:
                await ws.send(str(options["send"]))
            expect, expect_json = options.get("expect"), options.get("expect_json")
            reads_answer = any(c.subject in ("body", "json") for c in conditions)
            if expect is None and expect_json is None and not reads_answer:
                return judge_answer(passed(started, 101), conditions, Answer())
            message = await ws.recv()
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            if expect is not None and expect not in text:
                return failed(started, f"first answer does not contain {expect!r}", 101)
            if expect_json is not None:
                try:
                    parsed = json.loads(text)
                except ValueError:
                    return failed(started, "first answer is not JSON", 101)
                problem = _subset_problem(expect_json, parsed)
                if problem:
                    return failed(started, f"first answer: {problem}", 101)
            body = message.encode() if isinstance(message, str) else bytes(message)
            return judge_answer(passed(started, 101), conditions, Answer(body=body))
    except InvalidStatus as exc:
        code = exc.response.status_code
        return failed(started, f"handshake refused: HTTP {code}", code)
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        why = f" (code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''})" if rcvd else ""
        return failed(started, f"connection closed before an answer{why}", 101)
    except InvalidURI as exc:
        return failed(started, f"bad url: {exc}")
    except (InvalidHandshake, WebSocketException) as exc:
        return failed(started, f"WebSocket handshake failed: {exc}")
    except EgressDenied as exc:
        return failed(started, str(exc))
    except ssl.SSLCertVerificationError as exc:
        return failed(started, f"TLS certificate rejected: {exc.verify_message or exc.reason}")
    except ssl.SSLError as exc:
        return failed(started, f"TLS error: {exc.reason or exc}")
    except ConnectionRefusedError:
        return failed(started, "connection refused")
    except OSError as exc:
        if isinstance(exc, TimeoutError):
            raise
        if isinstance(exc, socket.gaierror):
            return failed(started, "host name could not be resolved")
        return failed(started, f"could not connect: {exc.strerror or exc}")
