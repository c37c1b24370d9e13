"""Wire protocol v1: package ids, status codes, close codes, envelope codec.

Pure functions, no I/O (the websocket endpoint is the only place that awaits).
``decode_request`` turns one text frame into a :class:`Request` or raises
:class:`FrameError` carrying whatever ``req_id``/``pkg_id`` could be salvaged,
so the endpoint can still answer exactly once.
"""

from __future__ import annotations

import enum
import re
import uuid
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

    MAINTENANCE_CREATE = 500
    MAINTENANCE_LIST = 501
    MAINTENANCE_UPDATE = 502
    MAINTENANCE_DELETE = 503

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


_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _valid_req_id(value: object) -> str | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    if _CANONICAL_UUID.fullmatch(value):  # the usual form; ~4x cheaper than uuid.UUID()
        return value
    try:
        uuid.UUID(value)
    except ValueError:
        return None
    return value


def decode_request(frame: str | bytes) -> Request:
    """Parse and check one envelope by hand (no schema pass on the hot path)."""
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
        raise FrameError("req_id must be a UUID string", pkg_id=pkg_id)
    if pkg_id is None:
        raise FrameError("pkg_id must be an integer", req_id=req_id)
    data = obj.get("data")
    if data is None:
        data = {}
    elif not isinstance(data, dict):
        raise FrameError("data must be a JSON object", req_id=req_id, pkg_id=pkg_id)
    return Request(pkg_id=pkg_id, req_id=req_id, data=data)


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
