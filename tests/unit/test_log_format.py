"""The JSON log line: its fields, values JSON cannot hold, and masking before formatting."""

from __future__ import annotations

import datetime
import json
import logging

from app.logs import JsonFormatter, _MaskingFilter


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("watchpost.ws", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_a_json_line_carries_the_message_and_the_request_fields_that_are_set() -> None:
    when = datetime.datetime(2026, 12, 5, tzinfo=datetime.UTC)
    record = _record("answered %s in %d ms", "PING", 3, req_id="r1", pkg_id=1, user=None, tenant=when)
    line = json.loads(JsonFormatter().format(record))
    assert line == {
        "ts": round(record.created, 3),
        "level": "info",
        "logger": "watchpost.ws",
        "msg": "answered PING in 3 ms",
        "req_id": "r1",
        "pkg_id": 1,
        "tenant": str(when),  # what JSON cannot hold is written as its str()
    }


def test_the_masking_filter_hands_the_formatter_a_masked_finished_message() -> None:
    record = _record("login with %s and %s (100%%)", "Bearer abcdefghijkl", "password=hunter22")
    assert _MaskingFilter().filter(record) is True
    assert record.args is None  # formatted once, here
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "login with Bearer *** and password=*** (100%)"
