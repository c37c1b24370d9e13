"""Monitor definitions on the wire: the JSON Schema, semantic validation, and
conversion to and from the :class:`~app.models.monitor.Monitor` row.

The handlers validate a CREATE/UPDATE body with :data:`MONITOR_FIELDS_SCHEMA`
(types, through the router), then call :func:`validate_definition` for the
rules a schema cannot say well (timeout < interval, per-kind required fields),
which raises ``InvalidData`` with one ``errors`` entry per bad path.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from app.errors import InvalidData
from app.models.base import iso
from app.models.monitor import Monitor
from app.monitoring.checks import HttpSpec, parse_expected_status
from app.routing import ID, MAX_ID

KINDS = ("http", "tcp", "push", "group")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_INTERVAL = 24 * 3600

#: Definition fields a client may send (CREATE, UPDATE, CHECK_NOW with an unsaved monitor).
MONITOR_FIELDS_SCHEMA: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "kind": {"enum": list(KINDS)},
    "url": {"type": ["string", "null"], "maxLength": 2048},
    "method": {"type": "string", "maxLength": 10},
    "expected_status": {
        "type": "array",
        "minItems": 1,
        "maxItems": 50,
        "items": {"type": ["integer", "string"], "maximum": MAX_ID, "maxLength": 16},
    },
    "keyword": {"type": ["string", "null"], "maxLength": 500},
    "verify_tls": {"type": "boolean"},
    "follow_redirects": {"type": "boolean"},
    "host": {"type": ["string", "null"], "maxLength": 255},
    # Ranges are checked by validate_definition (all errors at once); the schema only
    # keeps numbers within what the database can hold.
    "port": {"type": ["integer", "null"], "maximum": MAX_ID},
    "interval": {"type": "integer", "maximum": MAX_ID},
    "timeout": {"type": "number"},
    "fail_threshold": {"type": "integer", "minimum": 1, "maximum": 100},
    "recover_threshold": {"type": "integer", "minimum": 1, "maximum": 100},
    "grace": {"type": "integer", "minimum": 0, "maximum": MAX_INTERVAL},
    "members": {"type": "array", "maxItems": 1000, "items": ID},
    "min_up": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "tags": {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 64}},
    "channels": {"type": "array", "maxItems": 50, "items": ID},
    "description": {"type": "string", "maxLength": 2000},
    "enabled": {"type": "boolean"},
}

DEFAULTS: dict[str, Any] = {
    "url": None,
    "method": "GET",
    "expected_status": ["200-399"],
    "keyword": None,
    "verify_tls": True,
    "follow_redirects": True,
    "host": None,
    "port": None,
    "interval": 60,
    "timeout": 10.0,
    "fail_threshold": 1,
    "recover_threshold": 1,
    "grace": 30,
    "members": [],
    "min_up": 1,
    "tags": [],
    "channels": [],
    "description": "",
    "enabled": True,
}


def new_push_token() -> str:
    return "wpp_" + secrets.token_urlsafe(24)


def _check_host(host: str) -> str | None:
    if not host or len(host) > 253 or any(c.isspace() for c in host) or "/" in host:
        return "host must be a host name or IP address, without scheme or path"
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if not all(
        label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() for label in labels
    ):
        return "host must be a host name or IP address, without scheme or path"
    return None


def validate_definition(values: dict[str, Any], *, min_interval: int) -> None:
    """Check a complete definition (defaults merged in); raise ``InvalidData`` listing every problem."""
    errors: list[dict[str, str]] = []

    def bad(path: str, msg: str) -> None:
        errors.append({"path": path, "msg": msg})

    kind = values["kind"]
    interval = values["interval"]
    timeout = values["timeout"]
    if not (min_interval <= interval <= MAX_INTERVAL):
        bad("interval", f"interval must be between {min_interval} and {MAX_INTERVAL} seconds")
    if timeout <= 0:
        bad("timeout", "timeout must be a positive number of seconds")
    elif timeout >= interval and kind in ("http", "tcp"):  # push and group monitors make no request
        bad("timeout", f"timeout ({timeout:g} s) must be shorter than interval ({interval} s)")
    if kind == "http":
        url = values.get("url")
        if not url:
            bad("url", "an http monitor needs a url, e.g. https://example.com/health")
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                bad("url", "url must be an absolute http:// or https:// URL with a host")
        if str(values.get("method", "GET")).upper() not in METHODS:
            bad("method", f"method must be one of {', '.join(METHODS)}")
        try:
            parse_expected_status(values.get("expected_status"))
        except ValueError as exc:
            bad("expected_status", str(exc))
    elif kind == "tcp":
        host = values.get("host")
        if not host:
            bad("host", "a tcp monitor needs a host")
        else:
            problem = _check_host(host)
            if problem:
                bad("host", problem)
        port = values.get("port")
        if port is None or not (1 <= port <= 65535):
            bad("port", "a tcp monitor needs a port between 1 and 65535")
    elif kind == "group":
        members = values.get("members") or []
        if not members:
            bad("members", "a group needs at least one member monitor id")
        elif len(set(members)) != len(members):
            bad("members", "members must not repeat a monitor id")
        if values.get("min_up", 1) > max(1, len(members)):
            bad(
                "min_up",
                f"min_up ({values.get('min_up')}) cannot exceed the number of members ({len(members)})",
            )
    if errors:
        raise InvalidData(f"invalid monitor: {errors[0]['msg']}", errors=errors)


def http_spec(m: Monitor | dict[str, Any]) -> HttpSpec:
    get = (lambda k: getattr(m, k)) if isinstance(m, Monitor) else m.get
    return HttpSpec(
        url=str(get("url")),
        method=str(get("method") or "GET").upper(),
        expected_status=parse_expected_status(get("expected_status")),
        keyword=get("keyword") or None,
        timeout=float(get("timeout") or 10),
        follow_redirects=bool(get("follow_redirects")),
        verify_tls=bool(get("verify_tls")),
    )


#: The wire fields of a monitor, in wire order.
WIRE_FIELDS = (
    "id",
    "name",
    "kind",
    "url",
    "method",
    "expected_status",
    "keyword",
    "verify_tls",
    "follow_redirects",
    "host",
    "port",
    "interval",
    "timeout",
    "fail_threshold",
    "recover_threshold",
    "grace",
    "members",
    "min_up",
    "tags",
    "channels",
    "description",
    "enabled",
    "state",
    "state_changed_at",
    "version",
    "push_token",
    "last_checked_at",
    "last_latency_ms",
    "last_status_code",
    "last_error",
    "cert_expires_at",
    "created_at",
    "updated_at",
)
_TIME_FIELDS = ("state_changed_at", "last_checked_at", "cert_expires_at", "created_at", "updated_at")


def monitor_to_wire(m: Monitor | Mapping[str, Any], *, show_push_token: bool = True) -> dict[str, Any]:
    """The monitor as clients see it (MONITOR_GET, LIST, events): from an ORM object or a row's mapping."""
    if isinstance(m, Monitor):
        wire = {name: getattr(m, name) for name in WIRE_FIELDS}
    else:
        wire = {name: m[name] for name in WIRE_FIELDS}
    for name in _TIME_FIELDS:
        wire[name] = iso(wire[name])
    if not show_push_token:
        wire["push_token"] = None
    return wire
