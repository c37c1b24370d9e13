"""The probe's spool: every result is on disk before it is sent, and forgotten once acknowledged.

One file, ``spool.jsonl`` in the state directory, of JSON lines:

- ``{"r": result}``: a result waiting for the server (appended before it is sent);
- ``{"done": [key, ...]}``: results the server acknowledged (or the bound dropped).

Reading the file back gives the results still pending, oldest first. Each write
is one ``os.write`` of whole lines on an ``O_APPEND`` descriptor, so a ``kill -9``
at any point leaves at most a torn last line (ignored when read back): a result
appended is never lost, and one acknowledged may at worst be sent again, which
the server counts as a duplicate (its key was stored). The file is compacted
(rewritten with the pending results only, then renamed over) when opened and
whenever the ``done`` records outgrow what is pending. Writes reach the kernel
at once; they survive a crash of the process, not of the machine (no fsync per
result; the compaction's rename is fsynced).

The spool is bounded: beyond ``limit`` pending results the oldest are dropped
(recorded as done, counted in :attr:`Spool.dropped` and logged).
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("app.probe")

SPOOL_FILE = "spool.jsonl"
LOCK_FILE = "probe.lock"


class StateDirBusy(RuntimeError):
    """Another probe process holds this state directory."""


class Spool:
    """Pending results, in memory (ordered by age) and in ``<state_dir>/spool.jsonl``."""

    def __init__(self, state_dir: str | Path, limit: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("the spool limit (--buffer) must be at least 1")
        self.dir = Path(state_dir)
        self.path = self.dir / SPOOL_FILE
        self.limit = limit
        #: key -> the result's JSON line, oldest first (dicts keep insertion order).
        self._pending: dict[str, bytes] = {}
        #: ``done`` keys written since the last compaction.
        self._done_since_compaction = 0
        #: Results dropped because the spool was full, since this process started.
        self.dropped = 0
        self._fd: int | None = None
        self._lock_fd: int | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def open(self) -> int:
        """Lock the state directory, read the spool back and compact it; return how many
        results are pending (to be replayed before new ones)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._pending = self.read(self.path)
        over = len(self._pending) - self.limit
        if over > 0:
            for key in list(itertools.islice(self._pending, over)):
                del self._pending[key]
            self.dropped += over
            log.warning(
                "spool: %d results over the --buffer limit of %d dropped (oldest first)", over, self.limit
            )
        self._compact()
        return len(self._pending)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirBusy(
                f"another probe is running with the state directory {self.dir}; each probe needs its own"
            ) from None
        self._lock_fd = fd

    @staticmethod
    def read(path: Path) -> dict[str, bytes]:
        """The pending results of a spool file, oldest first (torn or foreign lines skipped)."""
        pending: dict[str, bytes] = {}
        if not path.exists():
            return pending
        with path.open("rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("spool: line %d of %s is not JSON (torn write?); skipped", number, path)
                    continue
                if not isinstance(record, dict):
                    continue
                result = record.get("r")
                if isinstance(result, dict) and isinstance(result.get("key"), str):
                    pending[result["key"]] = orjson.dumps(result)
                elif isinstance(record.get("done"), list):
                    for key in record["done"]:
                        if isinstance(key, str):
                            pending.pop(key, None)
        return pending

    # -- results -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._pending)

    def append(self, results: list[dict[str, Any]]) -> None:
        """Write ``results`` (each with a unique ``key``) to disk, then hold them as pending."""
        if not results:
            return
        lines = []
        for result in results:
            body = orjson.dumps(result)
            lines.append(b'{"r":' + body + b"}\n")
            self._pending[result["key"]] = body
        self._write(b"".join(lines))
        over = len(self._pending) - self.limit
        if over > 0:
            dropped = list(itertools.islice(self._pending, over))
            for key in dropped:
                del self._pending[key]
            self.dropped += over
            self._write_done(dropped)
            log.warning(
                "spool full (--buffer %d): dropped the %d oldest results (%d dropped since start)",
                self.limit,
                over,
                self.dropped,
            )

    def oldest(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` pending results, oldest first (they stay pending until :meth:`ack`)."""
        return [orjson.loads(body) for body in itertools.islice(self._pending.values(), n)]

    def ack(self, keys: list[str]) -> None:
        """The server acknowledged these results: forget them (on disk first)."""
        gone = [k for k in keys if k in self._pending]
        if not gone:
            return
        self._write_done(gone)
        for key in gone:
            del self._pending[key]
        if self._done_since_compaction > max(10_000, 2 * len(self._pending)):
            self._compact()

    def _write_done(self, keys: list[str]) -> None:
        self._write(orjson.dumps({"done": keys}) + b"\n")
        self._done_since_compaction += len(keys)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise RuntimeError("the spool is not open")
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def _compact(self) -> None:
        """Rewrite the file with only the pending results (atomic: write, fsync, rename)."""
        tmp = self.path.with_suffix(".tmp")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
            for body in self._pending.values():
                fh.write(b'{"r":' + body + b"}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._done_since_compaction = 0

    def file_size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0
