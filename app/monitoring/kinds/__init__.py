"""Check kinds beyond http, tcp, push and group: ``dns``, ``postgres``, ``redis``,
``websocket`` and ``ping``, one module each (``database`` holds postgres and redis).

A kind's own fields live in the monitor's ``options`` object; the target itself
uses the shared fields where they fit (``host`` for dns and ping, ``url`` for
websocket). This package is the one place the rest of the server asks about
them: :func:`validate` (problems as ``bad(path, msg)``), :func:`run` (one probe,
never raising), :func:`mask_options` (the wire form, secrets as ``"***"``),
:func:`keep_secrets` (an update sending ``"***"`` back keeps the stored value)
and :func:`secrets` (texts to mask in results and logs).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from app import egress
from app.egress import EgressPolicy
from app.monitoring.checks import CheckOutcome
from app.monitoring.kinds import database, dns, ping, websocket
from app.monitoring.kinds.common import MASK, Bad, connection_secrets

NAMES = ("dns", "postgres", "redis", "websocket", "ping")

#: The ``options`` field on the wire: every option of every kind, typed; which ones a
#: kind takes is checked by :func:`validate`.
OPTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": 10,
    "properties": {**dns.SCHEMA, **database.SCHEMA, **websocket.SCHEMA, **ping.SCHEMA},
    "additionalProperties": False,
}

#: Options shown masked; their stored values are used by the checks only.
SECRET_OPTIONS = {"postgres": ("connection_string",), "redis": ("connection_string",)}


def validate(kind: str, values: Mapping[str, Any], bad: Bad) -> None:
    if kind == "dns":
        dns.validate(values, bad)
    elif kind in ("postgres", "redis"):
        database.validate(kind, values, bad)
    elif kind == "websocket":
        websocket.validate(values, bad)
    elif kind == "ping":
        ping.validate(values, bad)
    elif values.get("options"):
        article = "an" if kind == "http" else "a"
        bad("options", f"{article} {kind} monitor takes no options")


async def run(
    kind: str, values: Mapping[str, Any], timeout: float, policy: EgressPolicy | None = None
) -> CheckOutcome:
    """One probe of a monitor of these kinds (``values``: its wire fields, stored secrets in)."""
    active = policy if policy is not None else egress.check_policy()
    if kind == "dns":
        return await dns.run(values, timeout, active)
    if kind in ("postgres", "redis"):
        return await database.run(kind, values, timeout, active)
    if kind == "websocket":
        return await websocket.run(values, timeout, active)
    if kind == "ping":
        return await ping.run(values, timeout, active)
    raise ValueError(f"{kind!r} is not a kind of this package")


def mask_options(kind: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as shown in answers, events and audit rows: secrets as ``"***"`` (a
    connection string whatever the kind, so a patch without its kind is masked too)."""
    out = dict(options or {})
    if out.get("connection_string"):
        out["connection_string"] = MASK
    if isinstance(out.get("headers"), dict):
        out["headers"] = {name: MASK for name in out["headers"]}
    return out


def keep_secrets(
    kind: str, stored: Mapping[str, Any] | None, sent: Mapping[str, Any], *, same_destination: bool = True
) -> dict[str, Any]:
    """``sent`` options with each ``"***"`` replaced by the stored secret it stands for.

    Header values stay with their destination: when the url's scheme, host or port
    changed (``same_destination`` false) a ``"***"`` stays as it is and validation asks
    for the value again, so a stored token never follows a url to another server."""
    old = dict(stored or {})
    out = dict(sent)
    for name in SECRET_OPTIONS.get(kind, ()):
        if out.get(name) == MASK and old.get(name):
            out[name] = old[name]
    if isinstance(out.get("headers"), dict) and same_destination:
        stored_headers = old.get("headers")
        old_headers: dict[str, Any] = stored_headers if isinstance(stored_headers, dict) else {}
        out["headers"] = {
            name: (old_headers[name] if value == MASK and name in old_headers else value)
            for name, value in out["headers"].items()
        }
    return out


def destination(url: Any) -> tuple[str, str, int | None] | None:
    """Where a url connects: scheme, host and port (None when it does not parse)."""
    if not isinstance(url, str):
        return None
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def secrets(options: Mapping[str, Any] | None) -> list[str]:
    """Texts of ``options`` that must not appear in a result, log line or audit row."""
    opts = options or {}
    found = connection_secrets(opts.get("connection_string"))
    if opts.get("connection_string"):
        found.append(str(opts["connection_string"]))
    headers = opts.get("headers")
    if isinstance(headers, dict):
        found += [str(v) for v in headers.values() if len(str(v)) >= 3]
    return sorted(set(found), key=len, reverse=True)
