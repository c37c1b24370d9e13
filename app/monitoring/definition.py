"""Monitor definitions on the wire: the JSON Schema, semantic validation, and
conversion to and from the :class:`~app.models.monitor.Monitor` row.

The handlers validate a CREATE/UPDATE body with :data:`MONITOR_FIELDS_SCHEMA`
(types, through the router), then call :func:`validate_definition` for the
rules a schema cannot say well (timeout < interval, per-kind required fields),
which raises ``InvalidData`` with one ``errors`` entry per bad path.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from app.errors import InvalidData
from app.ids import ID, MAX_ID
from app.models.base import iso
from app.models.monitor import Monitor
from app.models.probe import LOCAL, LOCATION_PATTERN
from app.monitoring import kinds
from app.monitoring.checks import MAX_BODY_BYTES, HttpSpec, parse_expected_status
from app.monitoring.conditions import (
    MAX_CONDITION_LENGTH,
    MAX_CONDITIONS,
    ConditionError,
    parse,
    parse_all,
)
from app.monitoring.request import (
    DEFAULT_CERT_ALERT_DAYS,
    DEFAULT_MAX_REDIRECTS,
    HEADER_NAME_PATTERN,
    MAX_REQUEST_BODY,
    auth_problems,
    header_problems,
    keep_masked_secrets,
    mask_request,
    request_headers,
    secrets_of,
)
from app.urls import MASK, BadURL, check_http_url, mask_credentials, valid_hostname

KINDS = ("http", "tcp", "push", "group", *kinds.NAMES)
#: The condition subjects each kind offers (app.monitoring.conditions): "json" is a
#: ``$.json.path``, "header" a ``header.NAME``. Other kinds take no conditions.
CONDITION_SUBJECTS: dict[str, tuple[str, ...]] = {
    "http": ("status", "response_time", "body", "json", "header", "cert_days"),
    "websocket": ("body", "response_time", "json"),
    "dns": ("body", "response_time", "json"),
    "tcp": ("response_time",),
}
#: Kinds whose checks evaluate ``conditions``.
CONDITION_KINDS = tuple(CONDITION_SUBJECTS)
_SUBJECT_NAMES = {"json": "a $.json.path", "header": "header.NAME"}
#: Kinds that make no request of their own (no timeout to fit in the interval).
PASSIVE_KINDS = ("push", "group")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_INTERVAL = 24 * 3600
MAX_REDIRECTS = 20
#: Most locations one monitor is checked from.
MAX_LOCATIONS = 16

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
    "max_redirects": {"type": ["integer", "null"], "maximum": MAX_ID},
    "headers": {
        "type": ["object", "null"],
        "maxProperties": 30,
        "propertyNames": {"pattern": HEADER_NAME_PATTERN, "maxLength": 100},
        "additionalProperties": {"type": "string", "maxLength": 2000},
    },
    "body": {"type": ["string", "null"], "maxLength": MAX_REQUEST_BODY},
    "auth": {
        "type": ["object", "null"],
        "properties": {
            "type": {"enum": ["basic", "bearer"]},
            "username": {"type": "string", "maxLength": 200},
            "password": {"type": "string", "maxLength": 500},
            "token": {"type": "string", "maxLength": 2000},
        },
        "required": ["type"],
    },
    "conditions": {
        "type": ["array", "null"],
        "maxItems": MAX_CONDITIONS,
        "items": {"type": "string", "maxLength": MAX_CONDITION_LENGTH},
    },
    "degraded_latency_ms": {
        "type": ["number", "null"],
        "maximum": MAX_INTERVAL * 1000,
    },
    "cert_alert_days": {
        "type": ["array", "null"],
        "maxItems": 10,
        "items": {"type": "integer", "maximum": MAX_ID},
    },
    "host": {"type": ["string", "null"], "maxLength": 255},
    # Ranges are checked by validate_definition (all errors at once); the schema only
    # keeps numbers within what the database can hold.
    "port": {"type": ["integer", "null"], "maximum": MAX_ID},
    "interval": {"type": "integer", "maximum": MAX_ID},
    "timeout": {"type": "number", "maximum": MAX_INTERVAL},
    "fail_threshold": {"type": "integer", "minimum": 1, "maximum": 100},
    "recover_threshold": {"type": "integer", "minimum": 1, "maximum": 100},
    "grace": {"type": "integer", "minimum": 0, "maximum": MAX_INTERVAL},
    "members": {"type": "array", "maxItems": 1000, "items": ID},
    "min_up": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    "tags": {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1, "maxLength": 64}},
    "channels": {"type": "array", "maxItems": 50, "items": ID},
    "description": {"type": "string", "maxLength": 2000},
    "enabled": {"type": "boolean"},
    # The fields of the dns, postgres, redis, websocket and ping kinds (app.monitoring.kinds).
    "options": kinds.OPTIONS_SCHEMA,
    # Where it is checked from and how many places must see it fail (docs/probes.md).
    "locations": {
        "type": "array",
        "minItems": 1,
        "maxItems": MAX_LOCATIONS,
        "items": {"type": "string", "maxLength": 64, "pattern": LOCATION_PATTERN},
    },
    "quorum": {"type": "integer", "minimum": 1, "maximum": MAX_LOCATIONS},
}

#: Alert routing fields of MONITOR_CREATE/UPDATE (fleet rows take them by name too, app.handlers.fleet).
ROUTING_FIELDS_SCHEMA: dict[str, Any] = {
    "depends_on": {"type": "array", "maxItems": 20, "items": ID},
    "covers_members": {"type": "boolean"},
    "escalation_policy": {**ID, "type": ["integer", "null"]},
}
ROUTING_DEFAULTS: dict[str, Any] = {"depends_on": [], "covers_members": False, "escalation_policy": None}

DEFAULTS: dict[str, Any] = {
    "url": None,
    "method": "GET",
    "expected_status": ["200-399"],
    "keyword": None,
    "verify_tls": True,
    "follow_redirects": True,
    "max_redirects": DEFAULT_MAX_REDIRECTS,
    "headers": {},
    "body": None,
    "auth": None,
    "conditions": [],
    "degraded_latency_ms": None,
    "cert_alert_days": list(DEFAULT_CERT_ALERT_DAYS),
    "host": None,
    "port": None,
    "interval": 60,
    # None: the default for the interval, see default_timeout (resolved before validation).
    "timeout": None,
    "fail_threshold": 1,
    "recover_threshold": 1,
    "grace": 30,
    "members": [],
    "min_up": 1,
    "tags": [],
    "channels": [],
    "description": "",
    "enabled": True,
    "options": {},
    "locations": [LOCAL],
    "quorum": 1,
}


def new_push_token() -> str:
    return "wpp_" + secrets.token_urlsafe(24)


#: The timeout a monitor gets when none is given, unless its interval asks for less.
DEFAULT_TIMEOUT = 10.0


def default_timeout(interval: Any, timeout_max: float) -> float:
    """The smaller of 10 s and 80 % of the interval (and never above CHECK_TIMEOUT_MAX), so a
    monitor without a timeout always fits its interval, even at the minimum interval."""
    limit = min(DEFAULT_TIMEOUT, timeout_max)
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval > 0:
        limit = min(limit, round(0.8 * interval, 3))
    return float(limit)


def with_defaults(data: Mapping[str, Any], *, timeout_max: float) -> dict[str, Any]:
    """A new definition: ``data`` over :data:`DEFAULTS`, the timeout fitted to the interval."""
    values = {**DEFAULTS, **data}
    if values.get("timeout") is None:
        values["timeout"] = default_timeout(values["interval"], timeout_max)
    return values


def normalise(values: dict[str, Any]) -> dict[str, Any]:
    """The stored form of a complete definition, so equal definitions compare equal."""
    values["method"] = str(values.get("method") or "GET").upper()
    values["timeout"] = float(values["timeout"])
    values["tags"] = sorted(set(values.get("tags") or []))
    values["headers"] = dict(values.get("headers") or {})
    values["conditions"] = [c.strip() for c in values.get("conditions") or []]
    if values.get("cert_alert_days") is not None:
        values["cert_alert_days"] = sorted(set(values["cert_alert_days"]), reverse=True)
    values["options"] = dict(values.get("options") or {})
    values["locations"] = list(values.get("locations") or [LOCAL])
    return values


def merge_update(
    current: Mapping[str, Any], patch: Mapping[str, Any], *, timeout_max: float
) -> dict[str, Any]:
    """A MONITOR_UPDATE: ``patch`` over the stored definition.

    A stored timeout equal to the default of the stored interval counts as "not set" and follows
    a new interval (interval 60 -> 10 without a timeout gives 8 s, not a refusal about 10 s); an
    explicit timeout stays and is validated against the new interval. A URL sent back exactly as
    it was shown (credentials masked) keeps the stored credentials."""
    values = {**current, **patch}
    follows_interval = current.get("timeout") == default_timeout(current.get("interval"), timeout_max)
    if patch.get("timeout") is None and "interval" in patch and follows_interval:
        values["timeout"] = default_timeout(values["interval"], timeout_max)
    if values.get("timeout") is None:
        values["timeout"] = current.get("timeout") or default_timeout(values["interval"], timeout_max)
    if patch.get("kind", current.get("kind")) != current.get("kind"):
        # Another kind's options and conditions mean nothing to the new one.
        if "options" not in patch:
            values["options"] = {}
        if "conditions" not in patch:
            values["conditions"] = []
        if "degraded_latency_ms" not in patch:
            values["degraded_latency_ms"] = None
    same = kinds.destination(values.get("url")) == kinds.destination(current.get("url"))
    stored_options = current.get("options") or {}
    if isinstance(patch.get("options"), Mapping):
        # Secret options sent back as shown ("***") keep their stored values.
        values["options"] = kinds.keep_secrets(
            str(values["kind"]), stored_options, patch["options"], same_destination=same
        )
    elif not same and values["kind"] == current.get("kind") and stored_options.get("headers"):
        # The url moved to another server: the stored header values do not go with it.
        values["options"] = {**stored_options, "headers": {name: MASK for name in stored_options["headers"]}}
    stored_url = current.get("url")
    sent_url = patch.get("url")
    if isinstance(sent_url, str) and stored_url and sent_url == mask_credentials(stored_url):
        values["url"] = stored_url
    # Header values and auth secrets sent back as *** keep the stored ones (like channel secrets).
    values.update(keep_masked_secrets(current, patch))
    return values


def _url_problem(url: str) -> str | None:
    try:
        check_http_url(url)
    except BadURL as exc:
        return f"url: {exc}"
    if _userinfo(url) == MASK:
        # "***@" stands for stored credentials only in a URL sent back unchanged; a changed
        # URL must not carry them to a new place (nor store the mask as a user name).
        return "url: re-enter the credentials (user:password@): *** keeps them only when the URL is unchanged"
    return None


def _userinfo(url: str) -> str | None:
    netloc = url.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return netloc.rsplit("@", 1)[0] if "@" in netloc else None


def validate_definition(values: dict[str, Any], *, min_interval: int, timeout_max: float) -> None:
    """Check a complete definition (defaults merged in); raise ``InvalidData`` listing every problem."""
    errors: list[dict[str, str]] = []

    def bad(path: str, msg: str) -> None:
        errors.append({"path": path, "msg": msg})

    kind = values["kind"]
    interval = values["interval"]
    timeout = values["timeout"]
    if not (min_interval <= interval <= MAX_INTERVAL):
        bad("interval", f"interval must be between {min_interval} and {MAX_INTERVAL} seconds")
    if not math.isfinite(timeout) or timeout <= 0:
        bad("timeout", "timeout must be a positive number of seconds")
    elif timeout > timeout_max:
        bad(
            "timeout",
            f"timeout ({timeout:g} s) is above the largest allowed ({timeout_max:g} s, CHECK_TIMEOUT_MAX)",
        )
    elif timeout >= interval and kind not in PASSIVE_KINDS:  # push and group monitors make no request
        bad("timeout", f"timeout ({timeout:g} s) must be shorter than interval ({interval} s)")
    if kind == "http":
        url = values.get("url")
        if not url:
            bad("url", "an http monitor needs a url, e.g. https://example.com/health")
        else:
            problem = _url_problem(url)
            if problem:
                bad("url", problem)
        if str(values.get("method", "GET")).upper() not in METHODS:
            bad("method", f"method must be one of {', '.join(METHODS)}")
        try:
            parse_expected_status(values.get("expected_status"))
        except ValueError as exc:
            bad("expected_status", str(exc))
        for path, msg in header_problems(values.get("headers")) + auth_problems(values.get("auth")):
            bad(path, msg)
        days = values.get("cert_alert_days") or []
        if any(isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 365 for d in days):
            bad("cert_alert_days", "cert_alert_days are whole days between 1 and 365, e.g. [21, 14, 7]")
        redirects = values.get("max_redirects")
        if redirects is not None and not 0 <= redirects <= MAX_REDIRECTS:
            bad("max_redirects", f"max_redirects must be between 0 and {MAX_REDIRECTS}")
        latency = values.get("degraded_latency_ms")
        if latency is not None and not (math.isfinite(latency) and latency > 0):
            bad("degraded_latency_ms", "degraded_latency_ms must be a positive number of milliseconds")
        elif latency is not None and latency >= values["timeout"] * 1000:
            bad(
                "degraded_latency_ms",
                f"degraded_latency_ms ({latency:g}) must be below the timeout ({values['timeout']:g} s)",
            )
    if kind != "http" and values.get("degraded_latency_ms") is not None:
        hint = (
            'use the condition "warn: response_time < N" instead'
            if kind in CONDITION_KINDS
            else "this kind has no latency threshold"
        )
        bad("degraded_latency_ms", f"degraded_latency_ms applies to http monitors; {hint}")
    for path, msg in condition_problems(kind, values.get("conditions")):
        bad(path, msg)
    if kind == "tcp":
        host = values.get("host")
        if not host:
            bad("host", "a tcp monitor needs a host")
        else:
            if not valid_hostname(host):
                bad("host", "host: must be a host name or IP address, without scheme, port or path")
        port = values.get("port")
        if port is None or not (1 <= port <= 65535):
            bad("port", "a tcp monitor needs a port between 1 and 65535")
    if values.get("covers_members") and kind != "group":
        bad("covers_members", "only a group can cover its members")
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
    locations = values.get("locations") or [LOCAL]
    if len(set(locations)) != len(locations):
        bad("locations", "locations must not repeat a name")
    elif kind in PASSIVE_KINDS and locations != [LOCAL]:
        bad("locations", f"a {kind} monitor is decided by the server itself: locations must be [{LOCAL!r}]")
    quorum = values.get("quorum", 1)
    if quorum > len(set(locations)):
        bad("quorum", f"quorum ({quorum}) cannot exceed the number of locations ({len(set(locations))})")
    kinds.validate(kind, values, bad)
    if errors:
        raise InvalidData(f"invalid monitor: {errors[0]['msg']}", errors=errors)


def unknown_locations(locations: Sequence[str], known: Collection[str]) -> str | None:
    """A problem text if ``locations`` names a place that is neither ``local`` nor one of
    the tenant's ``known`` locations (created with their first probe token), else None."""
    missing = [name for name in dict.fromkeys(locations) if name != LOCAL and name not in known]
    if not missing:
        return None
    return (
        f"unknown locations {', '.join(missing)}: a location exists once a probe token "
        "is created for it (TOKEN_CREATE with role 'probe'); 'local' is the server itself"
    )


def condition_problems(kind: str, texts: Any) -> list[tuple[str, str]]:
    """``(path, msg)`` for each condition that does not parse or names a subject ``kind``
    does not offer (``'status' is not available for a dns monitor; use body, …``)."""
    if not texts:
        return []
    offered = CONDITION_SUBJECTS.get(kind)
    if offered is None:
        return [
            (
                "conditions",
                f"a {kind} monitor takes no conditions; they apply to "
                f"{', '.join(CONDITION_KINDS[:-1])} and {CONDITION_KINDS[-1]} monitors",
            )
        ]
    problems = []
    for i, text in enumerate(texts):
        try:
            condition = parse(text)
        except ConditionError as exc:
            problems.append((f"conditions[{i}]", f"conditions[{i}] at {exc}: {text[:80]!r}"))
            continue
        if condition.subject not in offered:
            article = "an" if kind == "http" else "a"
            names = [_SUBJECT_NAMES.get(s, s) for s in offered]
            choices = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
            problems.append(
                (
                    f"conditions[{i}]",
                    f"conditions[{i}]: {condition.label!r} is not available for {article} {kind} monitor;"
                    f" use {choices}",
                )
            )
    return problems


def http_spec(
    m: Monitor | Mapping[str, Any], *, timeout_max: float, max_body_bytes: int = MAX_BODY_BYTES
) -> HttpSpec:
    """What to probe; the timeout is capped by ``timeout_max`` (rows stored before the cap)."""
    get = (lambda k: getattr(m, k)) if isinstance(m, Monitor) else m.get
    max_redirects = get("max_redirects")
    return HttpSpec(
        url=str(get("url")),
        method=str(get("method") or "GET").upper(),
        expected_status=parse_expected_status(get("expected_status")),
        keyword=get("keyword") or None,
        timeout=effective_timeout(get("timeout"), timeout_max),
        follow_redirects=bool(get("follow_redirects")),
        verify_tls=bool(get("verify_tls")),
        headers=request_headers(get("headers"), get("auth")),
        max_body_bytes=max_body_bytes,
        body=get("body") or None,
        max_redirects=DEFAULT_MAX_REDIRECTS if max_redirects is None else int(max_redirects),
        conditions=parse_all(get("conditions")),
        degraded_latency_ms=get("degraded_latency_ms"),
        secrets=tuple(secrets_of(get("headers"), get("auth"))),
    )


def kind_values(m: Monitor | Mapping[str, Any]) -> dict[str, Any]:
    """The fields a runner of :mod:`app.monitoring.kinds` reads, stored secrets included."""
    get = (lambda k: getattr(m, k)) if isinstance(m, Monitor) else m.get
    return {
        "url": get("url"),
        "host": get("host"),
        "verify_tls": get("verify_tls"),
        "options": dict(get("options") or {}),
        "conditions": list(get("conditions") or []),
    }


def effective_timeout(timeout: Any, timeout_max: float) -> float:
    """The timeout a check really gets: the stored one, capped by CHECK_TIMEOUT_MAX."""
    try:
        value = float(timeout)
    except (TypeError, ValueError):
        return min(DEFAULT_TIMEOUT, timeout_max)
    if not math.isfinite(value) or value <= 0:
        return min(DEFAULT_TIMEOUT, timeout_max)
    return min(value, timeout_max)


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
    "max_redirects",
    "headers",
    "body",
    "auth",
    "conditions",
    "degraded_latency_ms",
    "cert_alert_days",
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
    "options",
    "locations",
    "quorum",
    "state",
    "state_changed_at",
    "version",
    "push_token",
    "last_checked_at",
    "last_latency_ms",
    "last_status_code",
    "last_error",
    "cert_expires_at",
    "cert_issuer",
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
    for name, default in ROUTING_DEFAULTS.items():
        value = getattr(m, name, default) if isinstance(m, Monitor) else m.get(name, default)
        wire[name] = list(value or []) if name == "depends_on" else value
    for name in _TIME_FIELDS:
        wire[name] = iso(wire[name])
    # Credentials inside a target URL are write-only: shown masked everywhere (answers,
    # events); the stored URL keeps them for the check.
    wire["url"] = mask_credentials(wire["url"])
    wire["headers"], wire["auth"] = mask_request(wire["headers"], wire["auth"])
    wire["conditions"] = list(wire["conditions"] or [])
    if wire["max_redirects"] is None:
        wire["max_redirects"] = DEFAULT_MAX_REDIRECTS
    # Secret options (connection strings, header values) likewise: "***" on the wire.
    wire["options"] = kinds.mask_options(str(wire["kind"]), wire["options"])
    if not show_push_token:
        wire["push_token"] = None
    return wire
