"""The assigned definitions and their seq, kept in the state directory across restarts.

``<state-dir>/assignments.json``: ``{"seq": 42, "monitors": [definition, ...]}``,
written atomically (temporary file, fsync, rename) with mode 0600, since
definitions carry the secrets their checks need (headers, basic auth, connection
strings). A probe restarted while the server is unreachable goes on checking what
it was assigned, and its next PROBE_HELLO sends ``since`` = the saved seq, so the
server replays only the changes it missed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("app.probe")

ASSIGNMENTS_FILE = "assignments.json"


def save(state_dir: Path, seq: int | None, definitions: list[dict[str, Any]]) -> None:
    path = state_dir / ASSIGNMENTS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, orjson.dumps({"seq": seq, "monitors": definitions}))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load(state_dir: Path) -> tuple[int | None, list[dict[str, Any]]]:
    """The saved seq and definitions; (None, []) when there are none or the file is unreadable."""
    path = state_dir / ASSIGNMENTS_FILE
    if not path.exists():
        return None, []
    try:
        saved = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring %s (%s): the assignments are loaded from the server", path, exc)
        return None, []
    if not isinstance(saved, dict) or not isinstance(saved.get("monitors"), list):
        return None, []
    seq = saved.get("seq")
    monitors = [d for d in saved["monitors"] if isinstance(d, dict) and isinstance(d.get("id"), int)]
    return (seq if isinstance(seq, int) else None), monitors
