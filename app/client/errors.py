"""Exceptions raised by :mod:`app.client`.

    WatchpostError                  root; ``status_code``, ``msg``, ``errors``, ``data``
    ├── ServerError          1      the server failed unexpectedly (details are in its log)
    ├── InvalidData          2      the request was malformed or a value was rejected
    ├── PermissionDenied     3      role too low, or the object belongs to another tenant
    ├── NotFound             4      the object does not exist in this tenant
    ├── Conflict             5      unique name taken, stale version, illegal state change
    ├── UnknownPkgId         6      the server has no handler for this pkg_id
    ├── RateLimited          7      too many messages; wait ``retry_after_ms``
    ├── Unauthenticated      8      the token was rejected (e.g. a failed AUTH_REFRESH)
    ├── Timeout              9      the server's handler exceeded its deadline
    ├── Unavailable         10      a server dependency (database, Redis, IdP) is down
    ├── RequestTimeout              no answer arrived in time (client side; also TimeoutError)
    └── ConnectionLost              the socket closed before the answer (also ConnectionError)
        └── AuthenticationFailed    closed with 4001/4003/4010 and re-authentication was impossible

The per-status classes are the answers the server gave; the last three are
failures the client observed itself and carry ``status_code = None``.
"""

from __future__ import annotations

from typing import Any

from app.client.constants import CloseCode, RSPCode


class WatchpostError(Exception):
    """Base of every client error. ``status_code`` is the server's RSPCode, or None."""

    status_code: int | None = None

    def __init__(
        self,
        msg: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        data: Any = None,
        pkg_id: int | None = None,
        req_id: str | None = None,
    ) -> None:
        super().__init__(msg)
        #: The server's human sentence (or the client's own, for local failures).
        self.msg = msg
        #: Per-field problems (``[{"path": ..., "msg": ...}]``) when the server sent them.
        self.errors = errors or []
        #: The whole ``data`` object of the error response, for extra fields.
        self.data = data
        self.pkg_id = pkg_id
        self.req_id = req_id

    def __str__(self) -> str:
        if not self.errors:
            return self.msg
        details = "; ".join(f"{e.get('path', '')}: {e.get('msg', '')}" for e in self.errors)
        return f"{self.msg} ({details})"


class ServerError(WatchpostError):
    status_code = RSPCode.ERROR


class InvalidData(WatchpostError):
    status_code = RSPCode.INVALID_DATA


class PermissionDenied(WatchpostError):
    status_code = RSPCode.PERMISSION_DENIED


class NotFound(WatchpostError):
    status_code = RSPCode.NOT_FOUND


class Conflict(WatchpostError):
    status_code = RSPCode.CONFLICT


class UnknownPkgId(WatchpostError):
    status_code = RSPCode.UNKNOWN_PKG_ID


class RateLimited(WatchpostError):
    """Too many messages. Wait ``retry_after_ms`` milliseconds before sending again."""

    status_code = RSPCode.RATE_LIMITED

    @property
    def retry_after_ms(self) -> int | None:
        value = self.data.get("retry_after_ms") if isinstance(self.data, dict) else None
        return int(value) if isinstance(value, int | float) else None


class Unauthenticated(WatchpostError):
    status_code = RSPCode.UNAUTHENTICATED


class Timeout(WatchpostError):
    """The server gave up on the handler (its deadline passed); the request may have had effects."""

    status_code = RSPCode.TIMEOUT


class Unavailable(WatchpostError):
    status_code = RSPCode.UNAVAILABLE


class RequestTimeout(WatchpostError, TimeoutError):
    """No answer within the call's timeout. A late answer is dropped; the request may have had effects."""


class ConnectionLost(WatchpostError, ConnectionError):
    """The connection closed (or could not be opened) before an answer arrived.

    ``close_code``/``close_reason`` are the WebSocket close frame's, when there
    was one. Calls are never retried automatically because they may have had
    effects; retry idempotent ones yourself.
    """

    def __init__(self, msg: str, *, close_code: int | None = None, close_reason: str = "") -> None:
        super().__init__(msg)
        self.close_code = close_code
        self.close_reason = close_reason


class AuthenticationFailed(ConnectionLost):
    """The server refused the credentials (close 4001, 4003 or 4010) and no new token helped.

    Get a valid token (``python -m app.client login``), or pass a ``token_provider``
    so the client can fetch fresh tokens itself; 4003 means the user is not a member
    of the requested tenant.
    """


#: Close codes that mean "these credentials will not work"; retrying with the same token is pointless.
AUTH_CLOSE_CODES = frozenset({CloseCode.AUTH_FAILED, CloseCode.TOKEN_EXPIRED, CloseCode.NOT_A_MEMBER})

_BY_STATUS: dict[int, type[WatchpostError]] = {
    cls.status_code: cls
    for cls in (
        ServerError,
        InvalidData,
        PermissionDenied,
        NotFound,
        Conflict,
        UnknownPkgId,
        RateLimited,
        Unauthenticated,
        Timeout,
        Unavailable,
    )
    if cls.status_code is not None
}


def error_from_response(frame: dict[str, Any]) -> WatchpostError:
    """Build the typed exception for a response whose ``status_code`` is not 0."""
    status = frame.get("status_code")
    data = frame.get("data")
    msg = data.get("msg") if isinstance(data, dict) else None
    errors = data.get("errors") if isinstance(data, dict) else None
    cls = _BY_STATUS.get(status, ServerError) if isinstance(status, int) else ServerError
    if not isinstance(msg, str) or not msg:
        msg = f"the server answered status {status} without a message"
    exc = cls(
        msg,
        errors=errors if isinstance(errors, list) else None,
        data=data,
        pkg_id=frame.get("pkg_id"),
        req_id=frame.get("req_id"),
    )
    if cls is ServerError and status != RSPCode.ERROR:
        # An unknown status from a newer server: keep the real code visible.
        exc.status_code = status if isinstance(status, int) else None
    return exc


def describe_close(code: int | None, reason: str) -> str:
    """A sentence for a close code, telling the caller what happened and what to do."""
    known: dict[int, str] = {
        CloseCode.NORMAL: "the server closed the connection normally",
        CloseCode.GOING_AWAY: "the server is shutting down or draining; reconnect",
        CloseCode.MESSAGE_TOO_BIG: "a frame exceeded the server's size limit; send smaller requests",
        CloseCode.INTERNAL_ERROR: "the server hit an internal error",
        CloseCode.TRY_AGAIN_LATER: "the server is overloaded; retry later",
        CloseCode.AUTH_FAILED: "authentication failed: the token is missing, invalid, expired or revoked",
        CloseCode.NOT_A_MEMBER: "the user is not a member of the requested tenant",
        CloseCode.TOO_MANY_CONNECTIONS: "too many connections for this user; close some and retry",
        CloseCode.SLOW_CONSUMER: "the client read too slowly and its send queue overflowed",
        CloseCode.TOKEN_EXPIRED: "the token expired without an in-band refresh",
    }
    text = known.get(code, "the connection closed") if code is not None else "the connection dropped"
    suffix = f" ({reason})" if reason else ""
    return f"{text} [close code {code}]{suffix}" if code is not None else f"{text}{suffix}"
