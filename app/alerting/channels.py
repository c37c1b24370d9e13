"""Channel configuration: per-kind validation, write-only secrets, the wire form.

Handlers call :func:`validate_config` before saving, :func:`merge_config` on
CHANNEL_UPDATE (so a client can send back the masked form it was shown
without wiping the secrets) and :func:`channel_json` for every answer. No I/O
except :func:`unknown_channel_ids`, which reads the caller's session.

Secrets are write-only. What counts as one, per kind:

- webhook: ``secret``, every custom header value, and the URL's path and query;
- slack, discord: the URL's path (it *is* the credential);
- email: ``password``.

In answers each is replaced by ``***`` (URLs keep scheme, host and port so a
reader can tell where alerts go).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting.senders import MASK, valid_address
from app.errors import InvalidData
from app.models.base import iso
from app.models.channel import Channel

KINDS = ("webhook", "slack", "discord", "email")
#: Monitor states a channel can subscribe to with ``on``.
ALERT_STATES = ("down", "up", "degraded")
DEFAULT_ON = ["down", "up"]
SECURITIES = ("starttls", "tls", "none")
_DEFAULT_PORT = {"starttls": 587, "tls": 465, "none": 25}

_URL = {"type": "string", "minLength": 8, "maxLength": 2048}
_NO_NEWLINE = "^[^\\r\\n]*$"

_CONFIG_SCHEMAS: dict[str, dict[str, Any]] = {
    "webhook": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "url": _URL,
            "secret": {"type": ["string", "null"], "minLength": 8, "maxLength": 256},
            "headers": {
                "type": ["object", "null"],
                "maxProperties": 20,
                "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"},
                "additionalProperties": {"type": "string", "maxLength": 1024, "pattern": _NO_NEWLINE},
            },
        },
    },
    "slack": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {"url": _URL},
    },
    "discord": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {"url": _URL},
    },
    "email": {
        "type": "object",
        "additionalProperties": False,
        "required": ["host", "from", "to"],
        "properties": {
            "host": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": "^[A-Za-z0-9.:\\-\\[\\]]+$",
            },
            "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535},
            "security": {"enum": list(SECURITIES)},
            "username": {"type": ["string", "null"], "maxLength": 255, "pattern": _NO_NEWLINE},
            "password": {"type": ["string", "null"], "maxLength": 255},
            "from": {"type": "string", "maxLength": 255},
            "to": {
                "type": "array",
                "minItems": 1,
                "maxItems": 20,
                "items": {"type": "string", "maxLength": 255},
            },
        },
    },
}
_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in _CONFIG_SCHEMAS.items()}

#: JSON Schema fragments the channel handlers use for the envelope check.
CHANNEL_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "kind": {"enum": list(KINDS)},
    "config": {"type": "object"},
    "on": {"type": "array", "items": {"enum": list(ALERT_STATES)}, "uniqueItems": True, "maxItems": 3},
    "remind_every": {"type": ["integer", "null"], "minimum": 1, "maximum": 7 * 24 * 60},
    "enabled": {"type": "boolean"},
}


def _invalid(path: str, msg: str) -> InvalidData:
    return InvalidData(f"{path}: {msg}", errors=[{"path": path, "msg": msg}])


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise _invalid("config.url", "is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _invalid("config.url", "must be an http:// or https:// URL with a host")


def validate_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The normalized config for ``kind``, or ``InvalidData`` naming the bad ``config.<key>``."""
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise _invalid("kind", f"must be one of {', '.join(KINDS)}")
    errors = sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(["config", *(str(p) for p in err.absolute_path)])
        # Never echo a rejected value: it may be a secret.
        msg = (
            err.message
            if err.validator in ("required", "additionalProperties")
            else f"invalid ({err.validator})"
        )
        raise _invalid(path, msg)
    out = {k: v for k, v in config.items() if v is not None}
    if kind != "email":
        _check_url(str(out["url"]))
        if kind == "webhook":
            out.setdefault("headers", {})
        return out
    out.setdefault("security", "starttls")
    out.setdefault("port", _DEFAULT_PORT[out["security"]])
    for path, address in [("config.from", out["from"]), *(("config.to", a) for a in out["to"])]:
        if not valid_address(address):
            raise _invalid(path, f"{address!r} is not a valid email address")
    if out.get("password") and not out.get("username"):
        raise _invalid("config.username", "is required when a password is set")
    return out


def _masked_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return MASK
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}/{MASK}"


def mask_config(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as clients see it: every secret replaced by ``***`` (absent ones stay null)."""
    out = dict(config)
    if "url" in out:
        out["url"] = _masked_url(str(out["url"]))
    if kind == "webhook":
        out["secret"] = MASK if config.get("secret") else None
        out["headers"] = {name: MASK for name in (config.get("headers") or {})}
    if kind == "email":
        out["password"] = MASK if config.get("password") else None
    return out


def merge_config(kind: str, stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a CHANNEL_UPDATE ``config`` patch: keys given replace, ``null`` removes,
    ``***`` (or the masked URL) keeps the stored secret. Validate the result next."""
    merged = dict(stored)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif value == MASK or (key == "url" and value == _masked_url(str(stored.get("url", "")))):
            continue
        elif key == "headers" and kind == "webhook" and isinstance(value, Mapping):
            old = stored.get("headers") or {}
            merged["headers"] = {
                name: (old[name] if v == MASK and name in old else v) for name, v in value.items()
            }
        else:
            merged[key] = value
    return merged


async def unknown_channel_ids(session: AsyncSession, tenant_id: int, ids: Iterable[int]) -> list[int]:
    """The ids in ``ids`` that are not channels of this tenant (sorted); for monitor
    validation, so MONITOR_CREATE/UPDATE can answer INVALID_DATA naming them."""
    wanted = set(ids)
    if not wanted:
        return []
    found = await session.execute(
        select(col(Channel.id)).where(col(Channel.tenant_id) == tenant_id, col(Channel.id).in_(wanted))
    )
    return sorted(wanted - set(found.scalars().all()))


def channel_json(channel: Channel) -> dict[str, Any]:
    """The wire shape (issue 6) plus the flag fields; secrets masked."""
    return {
        "id": channel.id,
        "name": channel.name,
        "kind": channel.kind,
        "config": mask_config(channel.kind, channel.config),
        "on": list(channel.on),
        "remind_every": channel.remind_every,
        "enabled": channel.enabled,
        "flagged": channel.flagged_at is not None,
        "flagged_at": iso(channel.flagged_at),
        "flagged_reason": channel.flagged_reason,
        "failure_streak": channel.failure_streak,
        "created_at": iso(channel.created_at),
        "updated_at": iso(channel.updated_at),
    }
