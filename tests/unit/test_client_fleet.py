"""The client's side of a fleet import: file parsing and chunks that fit a frame."""

from __future__ import annotations

import orjson
import pytest

from app.client.fleet import FleetFileError, chunk_rows, dump_fleet, parse_fleet

#: WS_MAX_FRAME_BYTES, the server's default frame limit.
FRAME = 64 * 1024


def test_chunks_keep_order_and_every_frame_fits() -> None:
    rows = [
        {"name": f"n{i:05}-é", "kind": "http", "url": f"https://h{i}.invalid/", "tags": ["x"] * (i % 7)}
        for i in range(10_000)
    ]
    chunks = chunk_rows(rows)
    assert [r for c in chunks for r in c] == rows
    assert 10 < len(chunks) < 40
    for i, part in enumerate(chunks):
        envelope = {
            "pkg_id": 108,
            "req_id": "0" * 36,
            "data": {
                "import_id": "f" * 32,
                "chunk": i,
                "chunks": len(chunks),
                "monitors": part,
                "dry_run": False,
                "delete_missing": False,
            },
        }
        assert len(orjson.dumps(envelope)) < FRAME


def test_files_in_yaml_and_json_round_trip() -> None:
    rows = [
        {"name": "api", "kind": "http", "url": "https://***@a.invalid/"},
        {"name": "g", "kind": "group", "members": ["api"]},
    ]
    for yaml_format in (True, False):
        assert parse_fleet(dump_fleet(rows, yaml_format=yaml_format), yaml_format=yaml_format) == rows
    assert parse_fleet(orjson.dumps(rows).decode(), yaml_format=False) == rows  # a bare list too


@pytest.mark.parametrize(
    ("text", "yaml_format", "msg"),
    [
        ("{", False, "not valid JSON"),
        ("a: [", True, "not valid YAML"),
        ('{"monitors": 3}', False, "expected a list"),
        ("- 1\n- 2\n", True, "expected a list"),
    ],
)
def test_what_is_not_a_fleet_file_is_named(text: str, yaml_format: bool, msg: str) -> None:
    with pytest.raises(FleetFileError, match=msg):
        parse_fleet(text, yaml_format=yaml_format)
