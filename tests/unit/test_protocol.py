"""Envelope decoding and encoding: pure functions, no I/O."""

from __future__ import annotations

import json
import uuid

import orjson
import pytest

from app.protocol import FrameError, PkgID, RSPCode, decode_request, encode_response

RID = str(uuid.uuid4())


def test_decodes_a_full_envelope() -> None:
    req = decode_request(json.dumps({"pkg_id": 102, "req_id": RID, "data": {"page": 2}}))
    assert (req.pkg_id, req.req_id, req.data) == (102, RID, {"page": 2})


@pytest.mark.parametrize("data", [None, "absent"])
def test_missing_or_null_data_is_an_empty_object(data: object) -> None:
    env: dict[str, object] = {"pkg_id": 1, "req_id": RID}
    if data != "absent":
        env["data"] = data
    assert decode_request(json.dumps(env)).data == {}


@pytest.mark.parametrize(
    ("frame", "msg", "req_id", "pkg_id"),
    [
        ("not json", "not valid JSON", None, None),
        (b"\xff\xfe", "not valid JSON", None, None),
        ("[1,2]", "JSON object", None, None),
        ('"str"', "JSON object", None, None),
        (json.dumps({"pkg_id": 1}), "req_id", None, 1),
        (json.dumps({"pkg_id": 1, "req_id": "not-a-uuid"}), "req_id", None, 1),
        (json.dumps({"pkg_id": 1, "req_id": 5}), "req_id", None, 1),
        (json.dumps({"pkg_id": 1, "req_id": "x" * 100}), "req_id", None, 1),
        (json.dumps({"pkg_id": "1", "req_id": RID}), "pkg_id", RID, None),
        (json.dumps({"pkg_id": 1.5, "req_id": RID}), "pkg_id", RID, None),
        (json.dumps({"pkg_id": True, "req_id": RID}), "pkg_id", RID, None),
        (json.dumps({"req_id": RID}), "pkg_id", RID, None),
        (json.dumps({"pkg_id": 1, "req_id": RID, "data": [1]}), "data must be", RID, 1),
        (json.dumps({"pkg_id": 1, "req_id": RID, "data": "x"}), "data must be", RID, 1),
    ],
)
def test_bad_frames_raise_with_what_could_be_salvaged(
    frame: str, msg: str, req_id: str | None, pkg_id: int | None
) -> None:
    with pytest.raises(FrameError) as info:
        decode_request(frame)
    err = info.value
    assert msg in err.msg
    assert err.req_id == req_id
    assert err.pkg_id == pkg_id
    resp = orjson.loads(err.to_response())
    assert resp["status_code"] == RSPCode.INVALID_DATA
    assert resp["req_id"] == req_id
    assert msg in resp["data"]["msg"]


def test_encode_response_shape() -> None:
    out = orjson.loads(encode_response(102, RID, RSPCode.OK, [1], {"page": 1}))
    assert out == {"pkg_id": 102, "req_id": RID, "status_code": 0, "data": [1], "meta": {"page": 1}}
    assert "meta" not in orjson.loads(encode_response(1, RID, RSPCode.OK, {}))


def test_fixed_ids_match_the_design() -> None:
    assert (PkgID.PING, PkgID.WHOAMI, PkgID.AUTH_REFRESH, PkgID.SUBSCRIBE, PkgID.SERVER_INFO) == (
        1,
        2,
        3,
        4,
        6,
    )
    assert (PkgID.MONITOR_CREATE, PkgID.CHECK_HISTORY, PkgID.INCIDENT_LIST, PkgID.TOKEN_CREATE) == (
        100,
        200,
        300,
        700,
    )
    assert PkgID.EVENT_AUTH_EXPIRING == 904
    assert [c.value for c in RSPCode] == list(range(11))
