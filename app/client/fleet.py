"""A fleet file in and out: MONITOR_IMPORT (108) in chunks, MONITOR_EXPORT (109) page by page.

The server speaks JSON; YAML is read and written here only. A file is either a
list of monitor rows or ``{"monitors": [...]}`` (what :func:`export_monitors`
writes); docs/monitoring.md "Fleet import and export" describes the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import yaml

from app.client.client import WatchpostClient
from app.client.constants import PkgID

#: JSON bytes of rows per frame: the server takes frames up to 64 KiB (WS_MAX_FRAME_BYTES)
#: including the envelope and the other fields.
CHUNK_BYTES = 60_000


class FleetFileError(ValueError):
    """The file is not a fleet definition; the message says what is wrong."""


def parse_fleet(text: str, *, yaml_format: bool) -> list[dict[str, Any]]:
    """The rows of a fleet file (JSON, or YAML when ``yaml_format``)."""
    try:
        doc = yaml.safe_load(text) if yaml_format else orjson.loads(text)
    except (yaml.YAMLError, orjson.JSONDecodeError) as exc:
        raise FleetFileError(f"not valid {'YAML' if yaml_format else 'JSON'}: {exc}") from None
    rows = doc.get("monitors") if isinstance(doc, dict) else doc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise FleetFileError('expected a list of monitors or {"monitors": [...]}, each an object')
    return rows


def dump_fleet(rows: Sequence[dict[str, Any]], *, yaml_format: bool) -> str:
    doc = {"monitors": list(rows)}
    if yaml_format:
        return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def chunk_rows(rows: Sequence[dict[str, Any]], max_bytes: int = CHUNK_BYTES) -> list[list[dict[str, Any]]]:
    """Rows split in order so that each chunk's JSON stays under ``max_bytes`` (a single larger
    row goes alone; the server names it if it is too large)."""
    chunks: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        n = len(orjson.dumps(row)) + 1
        if chunks[-1] and size + n > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(row)
        size += n
    return chunks


async def import_monitors(
    client: WatchpostClient,
    rows: Sequence[dict[str, Any]],
    *,
    dry_run: bool = False,
    delete_missing: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Apply ``rows`` as one import (the server applies on the last chunk); its answer."""
    parts = chunk_rows(rows)
    import_id = uuid.uuid4().hex
    answer: dict[str, Any] = {}
    for i, part in enumerate(parts):
        data: dict[str, Any] = {"import_id": import_id, "chunk": i, "chunks": len(parts), "monitors": part}
        if i == len(parts) - 1:
            data.update(dry_run=dry_run, delete_missing=delete_missing)
        answer = await client.call(PkgID.MONITOR_IMPORT, data, timeout=timeout)
    return answer


async def export_monitors(client: WatchpostClient, *, timeout: float | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await client.call(PkgID.MONITOR_EXPORT, {"after": after, "limit": 1000}, timeout=timeout)
        rows.extend(page["monitors"])
        if page["next"] is None:
            return rows
        after = int(page["next"])
