"""Chunked upload of a fleet definition (MONITOR_IMPORT 108).

A frame holds at most WS_MAX_FRAME_BYTES (64 KiB), a fleet of 10,000 monitors
about a megabyte, so an import arrives as chunks 0..n-1 of one ``import_id``,
in order, and is applied when the last one arrives. Until then its rows wait
here, in this process (the chunks of one import go over one connection).

Everything held is bounded: rows and bytes per import, imports open at once
per process, and an idle time after which an unfinished import is dropped. One
user has at most one import open per tenant; chunk 0 of a new one replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidData, RateLimited

#: Rows in one import: a 10,000-monitor fleet (the default QUOTA_MONITORS) in one go.
MAX_ROWS = 10_000
#: JSON bytes of one import's rows: 10,000 fully spelled-out definitions.
MAX_BYTES = 8 * 1024 * 1024
#: Unfinished imports held by one process at once (memory bound, ~MAX_OPEN x MAX_BYTES).
MAX_OPEN = 4
#: Seconds an unfinished import waits for its next chunk.
IDLE_SECONDS = 120.0

Owner = tuple[int, str]  # (tenant id, actor)


@dataclass(slots=True)
class _Upload:
    import_id: str
    chunks: int
    touched: float
    received: int = 0
    size: int = 0
    rows: list[Any] = field(default_factory=list)


class Uploads:
    def __init__(
        self,
        *,
        max_rows: int = MAX_ROWS,
        max_bytes: int = MAX_BYTES,
        max_open: int = MAX_OPEN,
        idle: float = IDLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rows, self.max_bytes, self.max_open, self.idle = max_rows, max_bytes, max_open, idle
        self._clock = clock
        self._open: dict[Owner, _Upload] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(
        self, owner: Owner, import_id: str, chunk: int, chunks: int, rows: list[Any], size: int
    ) -> list[Any] | None:
        """Take one chunk; the whole import's rows when it was the last, else None.

        A chunk out of order, or an import over a limit, drops the import (InvalidData): the
        client starts again from chunk 0."""
        now = self._clock()
        self._expire(now)
        if chunk >= chunks:
            raise InvalidData(
                f"chunk {chunk} of {chunks}: chunks are numbered 0 to {chunks - 1}",
                errors=[{"path": "chunk", "msg": "beyond chunks"}],
            )
        upload = self._open.get(owner)
        if chunk == 0:
            self._open.pop(owner, None)  # a new import replaces this user's unfinished one
            if len(self._open) >= self.max_open:
                raise RateLimited(
                    f"{self.max_open} imports are being uploaded to this server right now; retry in a minute",
                    retry_after=self.idle / 4,
                )
            upload = _Upload(import_id, chunks, now)
            if chunks > 1:
                self._open[owner] = upload
        elif upload is None or upload.import_id != import_id:
            raise InvalidData(
                f"no import {import_id!r} is open (never started, finished, replaced or idle for "
                f"over {self.idle:g} s); send it again from chunk 0",
                errors=[{"path": "import_id", "msg": "not open"}],
            )
        elif chunk != upload.received or chunks != upload.chunks:
            del self._open[owner]
            raise InvalidData(
                f"import {import_id!r} expected chunk {upload.received} of {upload.chunks}, got "
                f"{chunk} of {chunks}; send chunks in order, one at a time, from chunk 0 again",
                errors=[{"path": "chunk", "msg": "out of order"}],
            )
        upload.received += 1
        upload.size += size
        upload.rows.extend(rows)
        upload.touched = now
        if len(upload.rows) > self.max_rows or upload.size > self.max_bytes:
            self._open.pop(owner, None)
            raise InvalidData(
                f"an import holds at most {self.max_rows} monitors and {self.max_bytes // (1024 * 1024)} "
                f"MiB of JSON; this one has {len(upload.rows)} monitors, {upload.size} bytes so far",
                errors=[{"path": "monitors", "msg": "import too large"}],
            )
        if upload.received < upload.chunks:
            return None
        self._open.pop(owner, None)
        return upload.rows

    def _expire(self, now: float) -> None:
        for owner in [o for o, u in self._open.items() if now - u.touched > self.idle]:
            del self._open[owner]
