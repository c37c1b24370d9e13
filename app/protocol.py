"""Wire protocol v1: package ids, status codes, close codes, envelope codec.

Pure functions, no I/O (the websocket endpoint is the only place that awaits).
``decode_request`` turns one text frame into a :class:`Request` or raises
:class:`FrameError` carrying whatever ``req_id``/``pkg_id`` could be salvaged,
so the endpoint can still answer exactly once.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

PROTOCOL_VERSION = 1
SUBPROTOCOL = "watchpost.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."


class PkgID(enum.IntEnum):
    """Every package id the server knows; one hundred-block per area. Table: docs/packages.md."""

    PING = 1
    WHOAMI = 2
    AUTH_REFRESH = 3
    SUBSCRIBE = 4
    UNSUBSCRIBE = 5
    SERVER_INFO = 6

    MONITOR_CREATE = 100
    MONITOR_GET = 101
    MONITOR_LIST = 102
    MONITOR_UPDATE = 103
    MONITOR_DELETE = 104
    MONITOR_PAUSE = 105
    MONITOR_RESUME = 106
    MONITOR_CHECK_NOW = 107
    MONITOR_IMPORT = 108
    MONITOR_EXPORT = 109

    CHECK_HISTORY = 200
    HEARTBEAT_PUSH = 201
    STATS_UPTIME = 210
    STATS_LATENCY = 211
    STATUS_SUMMARY = 212

    INCIDENT_LIST = 300
    INCIDENT_GET = 301
    INCIDENT_ACK = 302
    INCIDENT_RESOLVE = 303

    CHANNEL_CREATE = 400
    CHANNEL_LIST = 401
    CHANNEL_UPDATE = 402
    CHANNEL_DELETE = 403
    CHANNEL_TEST = 404
    DELIVERY_LIST = 410
    ESCALATION_CREATE = 420
    ESCALATION_LIST = 421
    ESCALATION_UPDATE = 422
    ESCALATION_DELETE = 423

    MAINTENANCE_CREATE = 500
    MAINTENANCE_LIST = 501
    MAINTENANCE_UPDATE = 502
    MAINTENANCE_DELETE = 503

    STATUS_PAGE_CREATE = 600
    STATUS_PAGE_LIST = 601
    STATUS_PAGE_GET = 602
    STATUS_PAGE_UPDATE = 603
    STATUS_PAGE_DELETE = 604
    STATUS_PAGE_VIEW = 605
    STATUS_POST_CREATE = 606
    STATUS_POST_UPDATE = 607
    STATUS_POST_LIST = 608
    STATUS_POST_DELETE = 609
    PROBE_HELLO = 610
    PROBE_HEARTBEAT = 611
    PROBE_ASSIGNMENTS = 612
    PROBE_REPORT = 613
    PROBE_LIST = 614
    LOCATION_STATS = 615

    TOKEN_CREATE = 700
    TOKEN_LIST = 701
    TOKEN_REVOKE = 702
    TENANT_CREATE = 710
    TENANT_LIST = 711
    TENANT_GET = 712
    TENANT_UPDATE = 713
    MEMBER_LIST = 720
    MEMBER_ADD = 721
    MEMBER_UPDATE = 722
    MEMBER_REMOVE = 723

    AUDIT_LIST = 800

    EVENT_MONITOR_STATUS = 900
    EVENT_CHECK_RESULT = 901
    EVENT_MONITOR_CHANGED = 902
    EVENT_INCIDENT = 903
    EVENT_AUTH_EXPIRING = 904
    EVENT_ROLE_CHANGED = 905
    EVENT_PROBE_ASSIGNMENT = 906
    EVENT_PROBE_STATUS = 907
    EVENT_LOCATION_STATE = 908


class RSPCode(enum.IntEnum):
    OK = 0
    ERROR = 1
    INVALID_DATA = 2
    PERMISSION_DENIED = 3
    NOT_FOUND = 4
    CONFLICT = 5
    UNKNOWN_PKG_ID = 6
    RATE_LIMITED = 7
    UNAUTHENTICATED = 8
    TIMEOUT = 9
    UNAVAILABLE = 10


class CloseCode(enum.IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    #: A text frame that is not UTF-8 (RFC 6455); sent by the WebSocket layer itself.
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    AUTH_FAILED = 4001
    NOT_A_MEMBER = 4003
    TOO_MANY_CONNECTIONS = 4008
    SLOW_CONSUMER = 4009
    TOKEN_EXPIRED = 4010


@dataclass(slots=True)
class Request:
    pkg_id: int
    req_id: str
    data: dict[str, Any] = field(default_factory=dict)


class FrameError(Exception):
    """A frame that cannot be dispatched; answer with ``to_response()``."""

    def __init__(self, msg: str, *, req_id: str | None = None, pkg_id: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.req_id = req_id
        self.pkg_id = pkg_id

    def to_response(self) -> bytes:
        return encode_response(self.pkg_id, self.req_id, RSPCode.INVALID_DATA, {"msg": self.msg})


#: The canonical text form only: uuid.UUID() would also take ``urn:uuid:``, braces, no
#: hyphens and (through int()) surrounding whitespace, so a newline could reach a log line.
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

#: Default for ``decode_request``'s ``max_depth`` (Settings.ws_max_json_depth).
MAX_JSON_DEPTH = 32
#: C0 controls and DEL, except tab, newline and carriage return (free text keeps them).
#: PostgreSQL cannot store NUL in text (the insert fails) and the others only ever
#: serve to forge log lines or hide text from people reading it.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: orjson refuses raw C0 bytes inside strings, so a control character can only arrive
#: as an escape (\u0000, \b, \f: all start with a backslash) or as a raw DEL; a frame
#: with neither (nearly all of them) skips the string walk.
#: How much of one client-chosen key a message quotes.
_KEY_SHOWN = 40
_PATH_SHOWN = 200


def _valid_req_id(value: object) -> str | None:
    if type(value) is str and len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
        return value
    return None


def decode_request(frame: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Request:
    """Parse and check one envelope by hand (no schema pass on the hot path).

    ``data`` may nest objects and arrays at most ``max_depth`` levels (``data``
    itself is level 1), and no string in it, value or key, may hold a control
    character other than tab, newline and carriage return. Both are refused
    here, before any schema or handler sees the data: a schema library or a
    database would otherwise meet them first (RecursionError, NUL in text).
    """
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(obj, dict):
        raise FrameError("frame must be a JSON object with pkg_id, req_id and data")
    raw_pkg = obj.get("pkg_id")
    pkg_id = raw_pkg if type(raw_pkg) is int else None
    req_id = _valid_req_id(obj.get("req_id"))
    if req_id is None:
        raise FrameError("req_id must be a UUID in its canonical form (8-4-4-4-12 hex digits)", pkg_id=pkg_id)
    if pkg_id is None:
        raise FrameError("pkg_id must be an integer", req_id=req_id)
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise FrameError("data must be a JSON object", req_id=req_id, pkg_id=pkg_id)
    elif data:
        # Fast paths keep PING as cheap as before: the envelope itself is one "{", so a
        # frame with at most max_depth + 1 brackets in all cannot nest data too deep.
        if isinstance(frame, str):
            deep = frame.count("{") + frame.count("[") > max_depth + 1
            text = "\\" in frame or "\x7f" in frame
        else:
            deep = frame.count(b"{") + frame.count(b"[") > max_depth + 1
            text = b"\\" in frame or b"\x7f" in frame
        if deep or text:
            problem = _data_problem(data, max_depth if deep else 0, text)
            if problem is not None:
                raise FrameError(problem, req_id=req_id, pkg_id=pkg_id)
    return Request(pkg_id=pkg_id, req_id=req_id, data=data)


#: A path as a linked list (parent, key): building one per container costs O(1).
_Path = tuple[Any, Any] | None


def _data_problem(data: dict[str, Any], max_depth: int, check_text: bool) -> str | None:
    """The first nesting or control-character problem in ``data``, or None.

    Iterative (a recursive walk would itself hit the recursion limit); ``max_depth``
    0 skips the depth check.
    """
    stack: list[tuple[Any, int, _Path]] = [(data, 1, None)]
    control = _CONTROL.search
    while stack:
        value, depth, path = stack.pop()
        pairs: Iterable[tuple[Any, Any]]
        if type(value) is dict:
            if check_text:
                for key in value:
                    found = control(key)
                    if found is not None:
                        return (
                            f"{_render(path)}: control character {_codepoint(found.group())} in key "
                            f"{_shown(key)} is not allowed; remove it"
                        )
            pairs = value.items()
        else:
            pairs = enumerate(value)
        for key, child in pairs:
            kind = type(child)
            if kind is str:
                if check_text:
                    found = control(child)
                    if found is not None:
                        return (
                            f"{_render((path, key))}: control character {_codepoint(found.group())} "
                            "is not allowed (only tab, newline and carriage return are); remove it"
                        )
            elif kind is dict or kind is list:
                if max_depth and depth >= max_depth:
                    return (
                        f"{_render((path, key))}: nested deeper than {max_depth} levels "
                        "(objects and arrays inside data); send flatter data"
                    )
                stack.append((child, depth + 1, (path, key)))
    return None


def _codepoint(char: str) -> str:
    return f"U+{ord(char):04X}"


def _shown(key: str) -> str:
    """A client's key, safe to echo: controls escaped, length capped."""
    text = key[:_KEY_SHOWN].encode("unicode_escape").decode("ascii")
    return "'" + text + ("..." if len(key) > _KEY_SHOWN else "") + "'"


def _render(path: _Path) -> str:
    keys: list[str] = []
    while path is not None:
        path, key = path
        keys.append(
            key[:_KEY_SHOWN].encode("unicode_escape").decode("ascii") if type(key) is str else str(key)
        )
    text = ".".join(["data", *reversed(keys)])
    return text if len(text) <= _PATH_SHOWN else text[:_PATH_SHOWN] + "..."


def encode_response(
    pkg_id: int | None,
    req_id: str | None,
    status_code: int,
    data: Any = None,
    meta: dict[str, Any] | None = None,
) -> bytes:
    body: dict[str, Any] = {"pkg_id": pkg_id, "req_id": req_id, "status_code": int(status_code), "data": data}
    if meta is not None:
        body["meta"] = meta
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS)


def error_data(msg: str, errors: list[dict[str, str]] | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"msg": msg}
    if errors:
        out["errors"] = errors
    out.update(extra)
    return out


# ----- frame builders: every frame the server sends besides a response is built here


def encode_event(topic_name: str, pkg_id: int, seq: int, data: Any) -> str:
    """A topic event (900–903): ``topic_name`` is tenant-relative, ``seq`` the topic's sequence.

    Built once per publish by the broker and handed to every subscriber as the same ``str``.
    """
    return orjson.dumps(
        {"pkg_id": pkg_id, "req_id": None, "status_code": 0, "topic": topic_name, "seq": seq, "data": data}
    ).decode()


def event_frame_parts(topic_name: str, pkg_id: int, data: Any) -> tuple[str, str]:
    """:func:`encode_event`'s frame split around its seq, for a backend that assigns the seq itself.

    ``prefix + str(seq) + suffix == encode_event(topic_name, pkg_id, seq, data)``: the Redis
    broker's publish script numbers the event atomically and joins the parts.
    """
    head = orjson.dumps({"pkg_id": pkg_id, "req_id": None, "status_code": 0, "topic": topic_name})
    return head[:-1].decode() + ',"seq":', ',"data":' + orjson.dumps(data).decode() + "}"


def encode_auth_expiring(expires_at: float, now: float) -> bytes:
    """EVENT_AUTH_EXPIRING (904): the connection's credential ends at ``expires_at``; refresh or be closed."""
    return encode_response(
        PkgID.EVENT_AUTH_EXPIRING,
        None,
        RSPCode.OK,
        {"expires_at": expires_at, "expires_in": max(0.0, round(expires_at - now, 3))},
    )


def encode_role_changed(role: str | None, dropped_topics: list[str]) -> bytes:
    """EVENT_ROLE_CHANGED (905): the connection now has ``role``; ``dropped_topics`` were unsubscribed."""
    return encode_response(
        PkgID.EVENT_ROLE_CHANGED,
        None,
        RSPCode.OK,
        {"roles": [role] if role else [], "dropped_topics": dropped_topics},
    )
