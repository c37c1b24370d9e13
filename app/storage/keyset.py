"""Keyset cursors ``<microseconds since 1970 UTC>:<row id>`` for lists ordered by (time, id),
and ``<row id>`` for lists ordered by id alone (STATUS_SUMMARY).

Clients must pass ``meta.next_cursor`` back unchanged, but a hostile or broken
client can send anything: :func:`decode_cursor` accepts only the exact form
:func:`encode_cursor` writes, with both parts inside what the database holds,
so a bad cursor is INVALID_DATA and never reaches a query.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from app.client_time import MAX_MICROS, MIN_TIME
from app.errors import InvalidData
from app.ids import MAX_ID

#: Largest id of a BIGINT key (check results outgrow 32 bits on a busy server).
MAX_BIG_ID = 2**63 - 1
_MICRO = timedelta(microseconds=1)
# ASCII digits only: int() would also take signs, spaces, underscores and other scripts' digits.
_FORM = re.compile(r"([0-9]{1,18}):([0-9]{1,19})")
_ID_FORM = re.compile(r"[1-9][0-9]{0,18}")


def encode_cursor(ts: datetime, row_id: int) -> str:
    ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    return f"{(ts - MIN_TIME) // _MICRO}:{row_id}"


def decode_cursor(raw: str, field: str = "cursor", *, max_id: int = MAX_ID) -> tuple[datetime, int]:
    """(time, id) from a cursor this server issued, or InvalidData naming ``field``.
    ``max_id`` is the key column's range: MAX_ID for serials, MAX_BIG_ID for BIGINT keys."""
    match = _FORM.fullmatch(raw)
    micros = int(match[1]) if match else -1
    row_id = int(match[2]) if match else 0
    if not (0 <= micros <= MAX_MICROS and 1 <= row_id <= max_id):
        raise InvalidData(
            f"{field} is not one this server issued; pass meta.next_cursor from the previous page unchanged",
            errors=[{"path": field, "msg": "malformed cursor"}],
        )
    return MIN_TIME + micros * _MICRO, row_id


def encode_id_cursor(row_id: int) -> str:
    return str(row_id)


def decode_id_cursor(raw: str, field: str = "cursor", *, max_id: int = MAX_ID) -> int:
    """The last id of the previous page, from a cursor :func:`encode_id_cursor` wrote."""
    row_id = int(raw) if _ID_FORM.fullmatch(raw) else 0
    if not 1 <= row_id <= max_id:
        raise InvalidData(
            f"{field} is not one this server issued; pass meta.next_cursor from the previous page unchanged",
            errors=[{"path": field, "msg": "malformed cursor"}],
        )
    return row_id
