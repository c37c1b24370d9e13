"""The one error tree. Domain code raises these; the router maps them to RSPCode.

    WatchpostError                 status 1 ERROR (message shown as given)
    ├── InvalidData               2  bad value; ``errors`` lists paths
    ├── PermissionDenied          3  role too low
    ├── NotFound                  4  object does not exist in this tenant
    ├── Conflict                  5  unique name taken, stale version, illegal state change
    ├── RateLimited               7  ``retry_after_ms`` says when to retry
    ├── Unauthenticated           8  token expired, revoked or invalid
    └── Unavailable              10  a dependency (database, Redis, IdP) is down

Anything else raised by a handler becomes a generic ERROR; the details go to the
log with the req_id, never to the client.
"""

from __future__ import annotations

from typing import Any

from app.protocol import RSPCode


class WatchpostError(Exception):
    code: RSPCode = RSPCode.ERROR

    def __init__(self, msg: str, *, errors: list[dict[str, str]] | None = None, **extra: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.errors = errors
        self.extra = extra

    def to_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"msg": self.msg}
        if self.errors:
            data["errors"] = self.errors
        data.update(self.extra)
        return data


class InvalidData(WatchpostError):
    code = RSPCode.INVALID_DATA


class PermissionDenied(WatchpostError):
    code = RSPCode.PERMISSION_DENIED


class NotFound(WatchpostError):
    code = RSPCode.NOT_FOUND


class Conflict(WatchpostError):
    code = RSPCode.CONFLICT


class RateLimited(WatchpostError):
    code = RSPCode.RATE_LIMITED


class Unauthenticated(WatchpostError):
    code = RSPCode.UNAUTHENTICATED


class Unavailable(WatchpostError):
    code = RSPCode.UNAVAILABLE
