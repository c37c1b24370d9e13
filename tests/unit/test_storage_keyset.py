"""Keyset cursors: only the issued form decodes, into an in-range time and id; anything else
is INVALID_DATA naming ``cursor`` (the packages that page by cursor: tests/test_input_ranges.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.client_time import MAX_TIME, MIN_TIME
from app.errors import InvalidData
from app.routing import MAX_ID
from app.storage.keyset import (
    MAX_BIG_ID,
    decode_cursor,
    decode_id_cursor,
    encode_cursor,
    encode_id_cursor,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=64), st.from_regex(r"[-+ ]?[0-9]{1,25}:[0-9]{1,25}\s?", fullmatch=True)))
def test_decode_cursor_accepts_only_issued_forms(text: str) -> None:
    try:
        ts, row_id = decode_cursor(text)
    except InvalidData as exc:
        assert exc.errors and exc.errors[0]["path"] == "cursor"
        return
    assert MIN_TIME <= ts <= MAX_TIME and 1 <= row_id <= MAX_ID
    assert re.fullmatch(r"[0-9]+:[0-9]+", text)


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999999)),
    st.integers(min_value=1, max_value=MAX_BIG_ID),
)
def test_cursor_roundtrip(ts: datetime, row_id: int) -> None:
    aware = ts.replace(tzinfo=UTC)
    assert decode_cursor(encode_cursor(aware, row_id), max_id=MAX_BIG_ID) == (aware, row_id)
    if row_id > MAX_ID:
        with pytest.raises(InvalidData):
            decode_cursor(encode_cursor(aware, row_id))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=64), st.from_regex(r"[-+ ]?[0-9]{1,25}\s?", fullmatch=True)))
def test_decode_id_cursor_accepts_only_issued_forms(text: str) -> None:
    try:
        row_id = decode_id_cursor(text)
    except InvalidData as exc:
        assert exc.errors and exc.errors[0]["path"] == "cursor"
        return
    assert 1 <= row_id <= MAX_ID
    assert encode_id_cursor(row_id) == text


@given(st.integers(min_value=1, max_value=MAX_ID))
def test_id_cursor_roundtrip(row_id: int) -> None:
    assert decode_id_cursor(encode_id_cursor(row_id)) == row_id


@pytest.mark.parametrize("raw", ["0", str(MAX_ID + 1), "٣", "1_0", " 1", "1:2", ""])
def test_id_cursor_outside_the_key_range_is_refused(raw: str) -> None:
    with pytest.raises(InvalidData):
        decode_id_cursor(raw)
