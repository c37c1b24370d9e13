"""Hostile frames meet the pure parts of the edge: the envelope decoder, every package's
schema check and the log formatter. Bad input is refused with a clear message at a cost
that does not grow with what the client sent (operation counts, not tight timings)."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.handlers import build_router
from app.logs import TextFormatter, escape
from app.protocol import FrameError, decode_request
from app.routing import PackageSpec
from app.schema_errors import MAX_ERRORS, MAX_MESSAGE

RID = str(uuid.uuid4())
ROUTER = build_router()
SPECS: list[PackageSpec] = [s for s in ROUTER.specs.values() if s.validator is not None]
#: A message is the path (bounded) plus a bounded message.
MSG_BOUND = MAX_MESSAGE + 300
#: Generous: rejecting must take milliseconds; the unbounded version took ~420 ms.
REJECT_SECONDS = 0.1

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def frame(data: Any, req_id: str = RID, pkg_id: int = 102) -> str:
    return json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data}, separators=(",", ":"))


def refused(text: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_request(text)
    return info.value


# ----- control characters


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"])
def test_control_characters_in_values_are_refused_with_their_path(char: str) -> None:
    err = refused(frame({"filter": [{"name": f"a{char}b"}]}))
    assert err.msg.startswith(f"data.filter.0.name: control character U+{ord(char):04X} is not allowed")
    assert (err.req_id, err.pkg_id) == (RID, 102)


def test_control_characters_in_keys_are_refused() -> None:
    err = refused(frame({"ok": {"na\x00me": 1}}))
    assert err.msg.startswith("data.ok: control character U+0000 in key 'na\\x00me'")


def test_raw_del_byte_is_refused_in_bytes_and_text_frames() -> None:
    assert "U+007F" in refused(frame({"name": "a\x7fb"}).encode()).msg
    assert (
        "U+007F"
        in refused(json.dumps({"pkg_id": 1, "req_id": RID, "data": {"a": "\x7f"}}, ensure_ascii=False)).msg
    )


def test_tab_newline_and_carriage_return_stay_allowed() -> None:
    data = {"description": "line one\nline two\r\n\tindented", "name\ttab": "é ü 中"}
    assert decode_request(frame(data)).data == data


# ----- nesting depth


def nested(levels: int) -> dict[str, Any]:
    """``data`` nesting ``levels`` objects/arrays deep, data itself being level 1."""
    inner: Any = 1
    for _ in range(levels - 1):
        inner = [inner]
    return {"x": inner} if levels > 1 else {}


def test_depth_32_is_accepted_and_33_refused() -> None:
    assert decode_request(frame(nested(32))).data == nested(32)
    err = refused(frame(nested(33)))
    assert "nested deeper than 32 levels" in err.msg
    assert err.msg.startswith("data.x.0.0")
    assert (err.req_id, err.pkg_id) == (RID, 102)


def test_depth_limit_is_a_parameter() -> None:
    assert decode_request(frame(nested(5)), max_depth=5).data == nested(5)
    assert "deeper than 4" in refused_with(frame(nested(5)), 4).msg


def refused_with(text: str, depth: int) -> FrameError:
    with pytest.raises(FrameError) as info:
        decode_request(text, depth)
    return info.value


def test_deep_nesting_near_the_parser_limit_is_refused_not_a_recursion_error() -> None:
    text = frame({"name": "HOLE"}).replace('"HOLE"', "[" * 1000 + "1" + "]" * 1000)
    err = refused(text)
    assert "nested deeper than 32" in err.msg
    assert len(err.msg) < 400


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    data = {"description": "[" * 500 + "{" * 500}
    assert decode_request(frame(data)).data == data


# ----- req_id


CANONICAL = "123e4567-e89b-12d3-a456-426614174000"


@pytest.mark.parametrize("req_id", [CANONICAL, CANONICAL.upper()])
def test_canonical_req_ids_are_accepted(req_id: str) -> None:
    assert decode_request(frame({}, req_id=req_id)).req_id == req_id


@pytest.mark.parametrize(
    "req_id",
    [
        f"urn:uuid:{CANONICAL}",
        "{" + CANONICAL + "}",
        CANONICAL.replace("-", ""),
        CANONICAL[:-1] + "\u0663",  # ARABIC-INDIC DIGIT THREE
        CANONICAL[:-1] + "\n",
        "\n" + CANONICAL.replace("-", "")[1:],
        CANONICAL + "\n",
        CANONICAL.replace("-", "_"),
        " " + CANONICAL,
    ],
)
def test_other_uuid_spellings_are_refused(req_id: str) -> None:
    err = refused(frame({}, req_id=req_id))
    assert "canonical" in err.msg
    assert err.req_id is None


# ----- property: the decoder never raises anything but FrameError, and its messages stay short

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


@FAST
@given(data=JSON, req_id=st.one_of(st.just(RID), st.text(max_size=40), st.integers()), pkg_id=JSON)
def test_decoder_never_fails_on_any_json(data: Any, req_id: Any, pkg_id: Any) -> None:
    text = json.dumps({"pkg_id": pkg_id, "req_id": req_id, "data": data})
    try:
        req = decode_request(text)
    except FrameError as exc:
        assert len(exc.msg) < 400
        return
    assert req.req_id == RID and type(req.pkg_id) is int and isinstance(req.data, dict)


@FAST
@given(raw=st.binary(max_size=200) | st.text(max_size=200))
def test_decoder_never_fails_on_any_bytes(raw: bytes | str) -> None:
    try:
        decode_request(raw)
    except FrameError as exc:
        assert len(exc.msg) < 400


# ----- schema checks: bounded errors for every registered package


def _array_fields(schema: dict[str, Any]) -> list[str]:
    return [name for name, sub in schema.get("properties", {}).items() if sub.get("type") == "array"]


def test_every_array_field_rejects_a_flood_with_one_short_error() -> None:
    checked = 0
    for spec in SPECS:
        assert spec.schema is not None and spec.validator is not None
        for field in _array_fields(spec.schema):
            for flood in ([0] * 30000, ["a"] * 20000):
                started = time.perf_counter()
                errors = spec.validator.errors({field: flood})
                elapsed = time.perf_counter() - started
                assert 1 <= len(errors) <= MAX_ERRORS, (spec.name, field)
                assert all(len(e["msg"]) <= MSG_BOUND for e in errors), (spec.name, field, errors)
                assert any("30000 items" in e["msg"] or "20000 items" in e["msg"] for e in errors)
                assert elapsed < REJECT_SECONDS, (spec.name, field, elapsed)
                checked += 1
    assert checked >= 10  # SUBSCRIBE, UNSUBSCRIBE, STATS_UPTIME windows, monitors' lists, ...


def test_subscribe_flood_of_zeros_reports_the_size_not_every_item() -> None:
    spec = ROUTER.specs[4]
    assert spec.validator is not None
    errors = spec.validator.errors({"topics": [0] * 30000})
    assert errors == [{"path": "topics", "msg": "topics: has 30000 items; at most 100 allowed"}]


def test_big_wrong_typed_values_are_described_not_printed() -> None:
    spec = ROUTER.specs[102]  # MONITOR_LIST
    assert spec.validator is not None
    errors = spec.validator.errors(
        {"name": {str(i): i for i in range(5000)}, **{f"k{i}": 1 for i in range(5000)}}
    )
    assert len(errors) <= MAX_ERRORS
    text = " ".join(e["msg"] for e in errors)
    assert "an object with 5000 keys" in text
    assert "and 4997 more were unexpected" in text
    assert len(text) < MAX_ERRORS * MSG_BOUND


def _near_miss(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects using the schema's own keys (so checks go deep) with arbitrary JSON values."""
    keys = list(schema.get("properties", {})) or ["id"]
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), JSON, max_size=len(keys) + 2)


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_package_schema_rejects_any_json_briefly(spec: PackageSpec, data: st.DataObject) -> None:
    assert spec.schema is not None and spec.validator is not None
    value = data.draw(_near_miss(spec.schema) | JSON)
    started = time.perf_counter()
    errors = spec.validator.errors(value)
    assert time.perf_counter() - started < REJECT_SECONDS
    assert len(errors) <= MAX_ERRORS
    for err in errors:
        assert set(err) == {"path", "msg"} and len(err["msg"]) <= MSG_BOUND


# ----- log lines


def test_text_log_lines_escape_control_characters() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("watchpost.test-escape")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("request req_id=%s user=%s", "x\nINFO watchpost.ws: forged", "a\rb\x00\x1b[31m\u2028")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert out.count("\n") == 1 and out.endswith("\n")
    assert "req_id=x\\nINFO watchpost.ws: forged user=a\\rb\\x00\\x1b[31m\\u2028" in out


def test_escape_leaves_ordinary_text_alone() -> None:
    text = "connected c1 user=admin tenant=default é 中"
    assert escape(text) is text
