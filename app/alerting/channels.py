"""Channel configuration: per-kind validation, write-only secrets, the wire form.

Handlers call :func:`validate_config` before saving, :func:`merge_config` on
CHANNEL_UPDATE (so a client can send back the masked form it was shown
without wiping the secrets) and :func:`channel_json` for every answer. No I/O
except :func:`unknown_channel_ids`, which reads the caller's session.

Secrets are write-only. What counts as one, per kind:

- webhook: ``secret``, every custom header value, and the URL's path and query;
- slack, discord: the URL's path (it *is* the credential);
- email: ``password``;
- apprise: every URL, whole (answers show only its scheme: ``tgram://***``);
- pagerduty: ``routing_key`` (and the events URL's path and query), ``webhook_secret``.

In answers each is replaced by ``***`` (URLs keep scheme, host and port so a
reader can tell where alerts go).

Secrets stay with their destination: a patch (CHANNEL_UPDATE, or CHANNEL_TEST
with ``id`` and ``config``) that changes where the channel sends — the URL's
origin, or the mail server's host, port, username or TLS mode — may not carry a
stored secret over; :func:`apply_patch` refuses it naming each field to give
again (or to set to ``null``). Otherwise anyone who may edit a channel could
read its secrets by sending them to a server of their own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from jsonschema import Draft202012Validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.alerting import apprise_sender, schedule, templates
from app.alerting.senders import MASK, valid_address
from app.errors import InvalidData
from app.models.base import iso
from app.models.channel import Channel
from app.urls import BadURL, check_http_url

KINDS = ("webhook", "slack", "discord", "email", "apprise", "pagerduty")
#: Monitor states a channel can subscribe to with ``on``.
#: What a channel can subscribe to: monitor states, and certificate expiry alerts.
ALERT_STATES = ("down", "up", "degraded", "certificate")
DEFAULT_ON = ["down", "up"]
#: PagerDuty's Events API v2 endpoint; ``events_url`` overrides it (EU accounts, tests).
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
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
    "apprise": {
        "type": "object",
        "additionalProperties": False,
        "required": ["urls"],
        "properties": {
            "urls": {
                "type": "array",
                "minItems": 1,
                "maxItems": apprise_sender.MAX_URLS,
                "items": {"type": "string", "minLength": 4, "maxLength": 2048, "pattern": _NO_NEWLINE},
            },
        },
    },
    "pagerduty": {
        "type": "object",
        "additionalProperties": False,
        "required": ["routing_key"],
        "properties": {
            # Events v2 integration keys are 32 characters; leave room for others.
            "routing_key": {
                "type": "string",
                "minLength": 8,
                "maxLength": 128,
                "pattern": "^[A-Za-z0-9_-]+$",
            },
            "events_url": _URL,
            "severity": {"enum": ["critical", "error", "warning", "info"]},
            # Signs PagerDuty's webhooks to /hooks/pagerduty/<id> (inbound: never sent anywhere).
            "webhook_secret": {"type": ["string", "null"], "minLength": 8, "maxLength": 256},
        },
    },
}
_VALIDATORS = {kind: Draft202012Validator(schema) for kind, schema in _CONFIG_SCHEMAS.items()}

#: JSON Schema fragments the channel handlers use for the envelope check.
CHANNEL_FIELDS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "kind": {"enum": list(KINDS)},
    "config": {"type": "object"},
    "on": {
        "type": "array",
        "items": {"enum": list(ALERT_STATES)},
        "uniqueItems": True,
        "maxItems": len(ALERT_STATES),
    },
    "remind_every": {"type": ["integer", "null"], "minimum": 1, "maximum": 7 * 24 * 60},
    "enabled": {"type": "boolean"},
    "template": templates.FIELDS,
    "quiet_hours": schedule.FIELDS,
}


def validate_template(template: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The template to store (None: the default messages), or ``InvalidData`` naming
    ``template.subject`` / ``template.body`` and the line of the error."""
    try:
        return templates.validate(template)
    except templates.PartProblem as exc:
        raise _invalid(f"template.{exc.part}", exc.problem.msg) from None


def validate_quiet_hours(quiet_hours: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The schedule to store (None: alerts go out at any time), or ``InvalidData``."""
    if not quiet_hours:
        return None
    out = dict(quiet_hours)
    tz = out.get("timezone")
    if tz is None:
        out.pop("timezone", None)
    elif not schedule.valid_timezone(str(tz)):
        raise _invalid("quiet_hours.timezone", "is not an IANA timezone name (like Europe/Berlin)")
    return out


def _invalid(path: str, msg: str) -> InvalidData:
    return InvalidData(f"{path}: {msg}", errors=[{"path": path, "msg": msg}])


def _check_url(url: str, path: str = "config.url") -> None:
    # The one strict check for outbound URLs (monitors use it too): anything it
    # accepts the senders can send, so a saved channel never fails on its URL.
    try:
        check_http_url(url)
    except BadURL as exc:
        raise _invalid(path, str(exc)) from None


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
    if kind == "apprise":
        for i, url in enumerate(out["urls"]):
            problem = apprise_sender.check_url(str(url))
            if problem:
                raise _invalid(f"config.urls.{i}", problem)
        return out
    if kind == "pagerduty":
        out.setdefault("events_url", PAGERDUTY_EVENTS_URL)
        out.setdefault("severity", "critical")
        _check_url(str(out["events_url"]), "config.events_url")
        return out
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
    if kind == "apprise":
        out["urls"] = [apprise_sender.masked(str(u)) for u in config.get("urls") or []]
    if kind == "pagerduty":
        out["routing_key"] = MASK if config.get("routing_key") else None
        out["webhook_secret"] = MASK if config.get("webhook_secret") else None
        if "events_url" in out:
            out["events_url"] = _masked_url(str(out["events_url"]))
    return out


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return (parsed.scheme, parsed.host.lower(), parsed.port or default)


def destination(kind: str, config: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a (validated) config sends: what a stored secret is bound to.

    Email includes the TLS mode: a password given for an encrypted session must
    not be replayed in the clear.
    """
    if kind == "email":
        return (
            str(config["host"]).lower(),
            config.get("port"),
            config.get("username"),
            config.get("security"),
        )
    if kind == "apprise":
        # Each URL is both the destination and its credential (like Slack's).
        return tuple(str(u) for u in config["urls"])
    if kind == "pagerduty":
        return _origin(str(config["events_url"]))
    return _origin(str(config["url"]))


def _kept_secret_paths(kind: str, stored: Mapping[str, Any], merged: Mapping[str, Any]) -> list[str]:
    """Paths of the stored secrets that ``merged`` still holds unchanged."""
    paths: list[str] = []
    if kind == "webhook":
        if stored.get("secret") and merged.get("secret") == stored["secret"]:
            paths.append("config.secret")
        old = stored.get("headers") or {}
        new = merged.get("headers") or {}
        paths += [f"config.headers.{name}" for name, value in new.items() if old.get(name) == value]
    if kind == "email" and stored.get("password") and merged.get("password") == stored["password"]:
        paths.append("config.password")
    if kind == "pagerduty" and merged.get("routing_key") == stored.get("routing_key"):
        paths.append("config.routing_key")
    return paths


def apply_patch(kind: str, stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """The validated config after a ``config`` patch (see :func:`merge_config`), or
    ``InvalidData`` when the patch moves the channel to another destination while
    keeping a stored secret. A value the patch gives again counts as new even if it
    equals the stored one: the client has shown it knows it."""
    merged = validate_config(kind, merge_config(kind, stored, patch))
    if not stored or destination(kind, merged) == destination(kind, stored):
        return merged
    given = {f"config.{k}" for k, v in patch.items() if v != MASK and k != "headers"}
    headers = patch.get("headers")
    if isinstance(headers, Mapping):
        given |= {f"config.headers.{name}" for name, v in headers.items() if v != MASK}
    kept = [p for p in _kept_secret_paths(kind, stored, merged) if p not in given]
    if kept:
        raise InvalidData(
            "this changes where the channel sends, and stored secrets only go to the destination "
            f"they were given for: give {', '.join(kept)} again in the same request, or set them "
            "to null to send without them",
            errors=[{"path": p, "msg": "give it again (or null) when the destination changes"} for p in kept],
        )
    return merged


def mask_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """A ``config`` as the client sent it, for the audit trail: every secret (and every
    key we do not know, which may be one) replaced by ``***``; nulls stay visible."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if value is None or key in _PLAIN_KEYS:
            out[key] = value
        elif key in ("url", "events_url") and isinstance(value, str):
            out[key] = value if value == MASK else _masked_url(value)
        elif key == "urls" and isinstance(value, list):
            out[key] = [apprise_sender.masked(v) if isinstance(v, str) else MASK for v in value]
        elif key == "headers" and isinstance(value, Mapping):
            out[key] = {str(name): None if v is None else MASK for name, v in value.items()}
        else:
            out[key] = MASK
    return out


#: Config keys that are never secret (everything else is masked in audit rows).
_PLAIN_KEYS = frozenset({"host", "port", "security", "username", "from", "to", "severity"})


def merge_config(kind: str, stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """Apply a CHANNEL_UPDATE ``config`` patch: keys given replace, ``null`` removes,
    ``***`` (or the masked URL) keeps the stored secret. Validate the result next."""
    merged = dict(stored)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif value == MASK or (
            key in ("url", "events_url") and value == _masked_url(str(stored.get(key, "")))
        ):
            continue
        elif key == "urls" and value == [apprise_sender.masked(str(u)) for u in stored.get("urls") or []]:
            # The list exactly as it was shown: keep the stored URLs.
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
        "template": channel.template,
        "quiet_hours": channel.quiet_hours,
        "flagged": channel.flagged_at is not None,
        "flagged_at": iso(channel.flagged_at),
        "flagged_reason": channel.flagged_reason,
        "failure_streak": channel.failure_streak,
        "created_at": iso(channel.created_at),
        "updated_at": iso(channel.updated_at),
    }
