"""What an HTTP check sends beyond method and URL: headers, body, basic/bearer auth, and
how its secrets stay write-only.

Secrets are shown as ``***`` in every answer and event, like alert-channel secrets: the
auth password or token, and the value of any header whose name looks like it carries one
(Authorization, Cookie, anything with token, key, secret, password, auth or session in
its name). Sending ``***`` back in an update keeps the stored value; ``***`` in a new
definition (or a changed auth user) is refused, so a mask never becomes a credential.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from app.urls import MASK

DEFAULT_MAX_REDIRECTS = 10
DEFAULT_CERT_ALERT_DAYS = (21, 14, 7)
#: Largest request body a monitor may send (bytes of text).
MAX_REQUEST_BODY = 65536
#: An HTTP header name (RFC 9110 token).
HEADER_NAME_PATTERN = r"^[!#\x24%&'*+.^_`|~0-9A-Za-z-]+$"
#: Headers the check sets itself; a monitor may not override them.
_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
_SECRET_NAME = re.compile(r"authorization|cookie|token|secret|password|passwd|key|auth|session", re.I)


def is_secret_header(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def header_problems(headers: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        path = f"headers.{name}"
        if name.lower() in _RESERVED:
            problems.append((path, f"headers: {name} is set by the check itself and cannot be given"))
        elif not isinstance(value, str) or any(c in value for c in "\r\n\x00"):
            problems.append((path, f"headers: the value of {name} must be one line of text"))
        elif value == MASK:
            problems.append((path, f"headers: re-enter the value of {name}; *** keeps a stored value only"))
    return problems


def auth_problems(auth: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    if not auth:
        return []
    kind = auth.get("type")
    unknown = sorted(set(auth) - {"type", "username", "password", "token"})
    if unknown:
        return [("auth", f"auth takes type, username, password or token, not {', '.join(unknown)[:100]}")]
    if kind == "basic":
        problems = []
        if not auth.get("username"):
            problems.append(("auth.username", "basic auth needs a username"))
        elif ":" in str(auth["username"]):
            problems.append(("auth.username", "a basic auth username cannot contain ':'"))
        if auth.get("password") is None:
            problems.append(("auth.password", "basic auth needs a password"))
        elif auth["password"] == MASK:
            problems.append(("auth.password", "re-enter the password; *** keeps a stored one only"))
        if "token" in auth:
            problems.append(("auth.token", "basic auth takes username and password, not token"))
        return problems
    if kind == "bearer":
        if not auth.get("token"):
            return [("auth.token", "bearer auth needs a token")]
        if auth["token"] == MASK:
            return [("auth.token", "re-enter the token; *** keeps a stored one only")]
        if any(c in auth["token"] for c in "\r\n\x00"):
            return [("auth.token", "the token must be one line of text")]
        if set(auth) - {"type", "token"}:
            return [("auth", "bearer auth takes only a token")]
        return []
    return [("auth.type", "auth.type is basic or bearer")]


def request_headers(headers: Mapping[str, str] | None, auth: Mapping[str, Any] | None) -> dict[str, str]:
    """The headers a check sends: the monitor's own, then its auth (auth wins over a header)."""
    out = {str(k): str(v) for k, v in (headers or {}).items()}
    if auth:
        if auth.get("type") == "basic":
            raw = f"{auth.get('username', '')}:{auth.get('password', '')}".encode()
            out = {k: v for k, v in out.items() if k.lower() != "authorization"}
            out["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif auth.get("type") == "bearer":
            out = {k: v for k, v in out.items() if k.lower() != "authorization"}
            out["Authorization"] = f"Bearer {auth.get('token', '')}"
    return out


def secrets_of(headers: Mapping[str, str] | None, auth: Mapping[str, Any] | None) -> list[str]:
    """Every secret value of a request, to scrub from error texts."""
    found = [v for k, v in (headers or {}).items() if is_secret_header(k) and v]
    if auth:
        found += [str(auth[k]) for k in ("password", "token") if auth.get(k)]
        if auth.get("type") == "basic":
            found.append(request_headers(None, auth)["Authorization"].split(" ", 1)[1])
    return [s for s in found if len(s) >= 3]


def mask_request(
    headers: Mapping[str, str] | None, auth: Mapping[str, Any] | None
) -> tuple[dict[str, str], dict[str, Any] | None]:
    """Headers and auth as clients see them: secret values replaced by ``***``."""
    shown = {k: (MASK if is_secret_header(k) and v else v) for k, v in (headers or {}).items()}
    if not auth:
        return shown, None
    masked = dict(auth)
    for key in ("password", "token"):
        if masked.get(key):
            masked[key] = MASK
    return shown, masked


def keep_masked_secrets(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """For an update: ``***`` in the patch's headers and auth replaced by the stored secret.

    A masked auth secret is kept only while the auth type (and basic username) is unchanged,
    so the stored password never goes along with a different user."""
    out: dict[str, Any] = {}
    stored_headers = current.get("headers") or {}
    if isinstance(patch.get("headers"), Mapping):
        headers = dict(patch["headers"])
        for name, value in headers.items():
            if value == MASK and name in stored_headers:
                headers[name] = stored_headers[name]
        out["headers"] = headers
    stored_auth = current.get("auth") or {}
    sent_auth = patch.get("auth")
    if isinstance(sent_auth, Mapping) and stored_auth:
        auth = dict(sent_auth)
        same = auth.get("type") == stored_auth.get("type") and auth.get("username") == stored_auth.get(
            "username"
        )
        for key in ("password", "token"):
            if auth.get(key) == MASK and same and stored_auth.get(key):
                auth[key] = stored_auth[key]
        out["auth"] = auth
    return out
