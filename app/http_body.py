"""Reading the small bodies of /login, /refresh, /logout and /hooks/…, at bounded cost.

Anyone may POST to these routes before authenticating, so the body is capped
(``HTTP_MAX_BODY_BYTES``) before anything is parsed: a declared Content-Length
over the cap is refused unread, and a chunked body is counted as it streams and
refused as soon as it passes the cap. Strings that go on to the database or the
identity provider must be free of control characters (PostgreSQL refuses NUL).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import ClientDisconnect, Request


class BodyError(Exception):
    """The body cannot be used; ``status`` and the message are safe to answer with."""

    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


#: C0 controls and DEL: never part of a username, password or token.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def has_control_chars(text: str) -> bool:
    return _CONTROL.search(text) is not None


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; raises ``BodyError`` (413 too large, 400 otherwise)."""
    raw = await read_bytes(request, limit)
    try:
        # A few KiB of brackets is enough to exhaust the parser's recursion.
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise BodyError(400, "the body is not a JSON object")
    return body


async def read_bytes(request: Request, limit: int) -> bytes:
    """The raw body, at most ``limit`` bytes (signed webhooks need the exact bytes);
    raises ``BodyError`` (413 too large, 400 otherwise)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BodyError(400, "Content-Length must be a number of bytes")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise BodyError(400, "the client went away before sending the whole body") from None
    return b"".join(chunks)


def _too_large(limit: int) -> BodyError:
    return BodyError(413, f"request body larger than {limit} bytes; send only what this route takes")
