"""The client's frame classification, error mapping and reconnect backoff, without a socket
(against real servers: tests/test_client.py)."""

from __future__ import annotations

from app.client import Event, RateLimited, error_from_response, full_jitter
from app.client.transport import Answer, Notice, parse_frame
from app.protocol import PkgID


def test_frames_are_classified_without_io() -> None:
    answer = parse_frame(b'{"pkg_id": 1, "req_id": "r1", "status_code": 0, "data": {}}')
    assert isinstance(answer, Answer) and answer.req_id == "r1"
    event = parse_frame(
        '{"pkg_id": 900, "req_id": null, "status_code": 0, "topic": "monitors", "seq": 3, "data": 1}'
    )
    assert event == Event("monitors", 3, 900, 1)
    notice = parse_frame('{"pkg_id": 904, "req_id": null, "status_code": 0, "data": {"expires_in": 60}}')
    assert isinstance(notice, Notice) and notice.pkg_id == PkgID.EVENT_AUTH_EXPIRING
    assert parse_frame("not json") is None and parse_frame("[1]") is None


def test_unknown_status_keeps_its_code_and_backoff_stays_in_bounds() -> None:
    exc = error_from_response({"pkg_id": 1, "req_id": "r", "status_code": 42, "data": {"msg": "new"}})
    assert exc.status_code == 42 and exc.msg == "new"
    limited = error_from_response({"status_code": 7, "data": {"msg": "slow down", "retry_after_ms": 250}})
    assert isinstance(limited, RateLimited) and limited.retry_after_ms == 250
    for attempt in range(40):
        assert 0 <= full_jitter(attempt, 0.5, 20.0) <= min(20.0, 0.5 * 2**attempt)
