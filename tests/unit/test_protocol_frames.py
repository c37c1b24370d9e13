"""The frame builders of app/protocol.py: every event the server sends (900–905) has its shape here.

Pure: no server, no broker. Clients (wp-client.js, app/client) rely on these exact keys.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from app.protocol import (
    PkgID,
    encode_auth_expiring,
    encode_event,
    encode_role_changed,
    event_frame_parts,
)

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _keys_and_values(frame: str | bytes) -> list[tuple[str, Any]]:
    return list(orjson.loads(frame).items())


def test_a_topic_event_names_its_topic_and_seq_after_the_envelope() -> None:
    frame = encode_event("monitors", PkgID.EVENT_MONITOR_STATUS, 1207, {"id": 7, "status": "down"})
    assert isinstance(frame, str)  # one str handed to every subscriber as is
    assert _keys_and_values(frame) == [
        ("pkg_id", 900),
        ("req_id", None),
        ("status_code", 0),
        ("topic", "monitors"),
        ("seq", 1207),
        ("data", {"id": 7, "status": "down"}),
    ]


@given(topic=st.text(max_size=64), pkg_id=st.integers(900, 903), seq=st.integers(0, 2**63 - 1), data=_JSON)
def test_the_parts_around_the_seq_make_the_same_frame(topic: str, pkg_id: int, seq: int, data: Any) -> None:
    """The Redis publish script joins these parts around the seq it assigns: byte for byte the frame
    the in-process broker sends, so a client cannot tell the backends apart."""
    prefix, suffix = event_frame_parts(topic, pkg_id, data)
    assert prefix + str(seq) + suffix == encode_event(topic, pkg_id, seq, data)


def test_auth_expiring_says_when_and_how_long_is_left() -> None:
    frame = encode_auth_expiring(1_764_000_900.0, now=1_764_000_840.12345)
    assert _keys_and_values(frame) == [
        ("pkg_id", PkgID.EVENT_AUTH_EXPIRING),
        ("req_id", None),
        ("status_code", 0),
        ("data", {"expires_at": 1_764_000_900.0, "expires_in": 59.877}),
    ]


def test_auth_expiring_after_the_deadline_has_nothing_left() -> None:
    data = orjson.loads(encode_auth_expiring(100.0, now=105.0))["data"]
    assert data == {"expires_at": 100.0, "expires_in": 0.0}


def test_role_changed_names_the_role_and_the_dropped_topics() -> None:
    frame = encode_role_changed("viewer", ["deliveries"])
    assert _keys_and_values(frame) == [
        ("pkg_id", PkgID.EVENT_ROLE_CHANGED),
        ("req_id", None),
        ("status_code", 0),
        ("data", {"roles": ["viewer"], "dropped_topics": ["deliveries"]}),
    ]


def test_role_changed_to_no_role_lists_no_roles() -> None:
    assert orjson.loads(encode_role_changed(None, []))["data"] == {"roles": [], "dropped_topics": []}
