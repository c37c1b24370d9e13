"""Which condition subjects each kind offers, without a server: a subject a kind does not
offer is refused with path ``conditions[i]`` and a message naming the ones it does, kinds
without conditions refuse the field, a kind change clears conditions it did not send, and
a dns answer's values as a condition subject (the runners against real targets:
tests/test_monitoring_kind_conditions.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from app.errors import InvalidData
from app.monitoring.checks import CheckOutcome, judge_answer
from app.monitoring.conditions import parse_all, values_answer
from app.monitoring.definition import (
    CONDITION_KINDS,
    merge_update,
    normalise,
    validate_definition,
    with_defaults,
)

TARGETS: dict[str, dict[str, Any]] = {
    "http": {"kind": "http", "url": "https://example.com/health"},
    "websocket": {"kind": "websocket", "url": "wss://example.com/socket"},
    "dns": {"kind": "dns", "host": "example.com"},
    "tcp": {"kind": "tcp", "host": "db.internal", "port": 5432},
    "ping": {"kind": "ping", "host": "127.0.0.1"},
    "postgres": {"kind": "postgres", "options": {"connection_string": "postgresql://db.internal/app"}},
    "redis": {"kind": "redis", "options": {"connection_string": "redis://cache.internal/0"}},
    "push": {"kind": "push"},
    "group": {"kind": "group", "members": [1]},
}


def problems(kind: str, conditions: list[str]) -> dict[str, str]:
    data = {"name": "m", "interval": 60, **TARGETS[kind], "conditions": conditions}
    values = normalise(with_defaults(data, timeout_max=60))
    try:
        validate_definition(values, min_interval=10, timeout_max=60)
    except InvalidData as exc:
        return {e["path"]: e["msg"] for e in exc.errors or []}
    return {}


def test_condition_kinds_are_http_websocket_dns_and_tcp() -> None:
    assert set(CONDITION_KINDS) == {"http", "websocket", "dns", "tcp"}


@pytest.mark.parametrize(
    ("kind", "conditions"),
    [
        (
            "http",
            [
                "status == 200",
                "response_time < 800",
                'body contains "ok"',
                '$.status == "UP"',
                'header.content-type contains "json"',
                "cert_days >= 14",
            ],
        ),
        ("websocket", ['body contains "pong"', '$.status == "UP"', "warn: response_time < 300"]),
        (
            "dns",
            ['body contains "192.0.2.10"', '$ contains "192.0.2.10"', "$[0] != null", "response_time < 50"],
        ),
        ("tcp", ["response_time < 50", "warn: response_time < 10"]),
    ],
)
def test_offered_subjects_pass(kind: str, conditions: list[str]) -> None:
    assert problems(kind, conditions) == {}


@pytest.mark.parametrize(
    ("kind", "condition", "message"),
    [
        (
            "dns",
            "status == 200",
            "conditions[1]: 'status' is not available for a dns monitor;"
            " use body, response_time or a $.json.path",
        ),
        (
            "dns",
            "warn: cert_days > 10",
            "conditions[1]: 'cert_days' is not available for a dns monitor;"
            " use body, response_time or a $.json.path",
        ),
        (
            "websocket",
            'header.x-env == "prod"',
            "conditions[1]: 'header.x-env' is not available for a websocket monitor;"
            " use body, response_time or a $.json.path",
        ),
        (
            "tcp",
            '$.status == "UP"',
            "conditions[1]: '$.status' is not available for a tcp monitor; use response_time",
        ),
        (
            "tcp",
            'body contains "x"',
            "conditions[1]: 'body' is not available for a tcp monitor; use response_time",
        ),
    ],
)
def test_subject_a_kind_does_not_offer_is_refused_with_its_index(
    kind: str, condition: str, message: str
) -> None:
    assert problems(kind, ["response_time < 900", condition]) == {"conditions[1]": message}


def test_parse_errors_keep_their_column_on_every_kind() -> None:
    for kind in ("websocket", "dns", "tcp"):
        found = problems(kind, ["response_time < high"])
        assert list(found) == ["conditions[0]"]
        assert found["conditions[0]"].startswith("conditions[0] at column 17: 'high' is not a value")


@pytest.mark.parametrize("kind", ["ping", "postgres", "redis", "push", "group"])
def test_kinds_without_conditions_refuse_them(kind: str) -> None:
    found = problems(kind, ["response_time < 100"])
    assert found.get("conditions") == (
        f"a {kind} monitor takes no conditions; they apply to http, websocket, dns and tcp monitors"
    )
    assert "conditions" not in problems(kind, [])


def test_changing_kind_clears_conditions_unless_sent() -> None:
    current = normalise(
        with_defaults({"name": "api", **TARGETS["http"], "conditions": ["status == 200"]}, timeout_max=60)
    )
    to_tcp = dict(TARGETS["tcp"])
    merged = merge_update(current, to_tcp, timeout_max=60)
    assert merged["conditions"] == []
    validate_definition(normalise(merged), min_interval=10, timeout_max=60)
    sent = merge_update(current, {**to_tcp, "conditions": ["response_time < 50"]}, timeout_max=60)
    assert sent["conditions"] == ["response_time < 50"]
    # The same kind keeps its stored conditions.
    assert merge_update(current, {"name": "renamed"}, timeout_max=60)["conditions"] == ["status == 200"]


def test_dns_values_as_body_and_json_list() -> None:
    answer = values_answer(["192.0.2.10", "192.0.2.11"], latency_ms=12.0)
    ok = CheckOutcome(True, 12.0)
    passing = parse_all(['$ contains "192.0.2.11"', 'body contains "192.0.2.10"', "$[1] != null"])
    assert judge_answer(ok, passing, answer) == ok
    failing = parse_all(['$ contains "192.0.2.1"', "response_time < 5", "warn: $[0] == 1"])
    judged = judge_answer(ok, failing, answer)
    assert not judged.ok
    assert judged.error == (
        '$: expected contains "192.0.2.1", got ["192.0.2.10","192.0.2.11"]; '
        "response_time: expected < 5, got 12.0"
    )
    warned = judge_answer(ok, parse_all(["warn: response_time < 5"]), values_answer(["a"]))
    assert warned.ok and warned.degraded and warned.warning == "response_time: expected < 5, got 12.0"
    # A failed probe stays as it was: conditions judge only an answer.
    down = CheckOutcome(False, 3.0, None, "connection refused")
    assert judge_answer(down, failing, answer) is down


def test_dashboard_form_offers_conditions_for_the_same_kinds() -> None:
    root = Path(__file__).resolve().parents[2] / "app" / "dashboard"
    script = (root / "static" / "monitor-form.js").read_text()
    found = re.search(r"const CONDITION_KINDS = \[([^\]]*)\];", script)
    assert found is not None
    assert [k.strip().strip('"') for k in found.group(1).split(",")] == list(CONDITION_KINDS)
    page = (root / "templates" / "index.html").read_text()
    row = re.search(r'<div class="grid-row" data-kinds="([^"]*)">\s*<label class="wide">Conditions', page)
    assert row is not None and row.group(1).split() == list(CONDITION_KINDS)


@pytest.mark.parametrize("kind", ["dns", "websocket", "tcp", "ping", "postgres"])
def test_degraded_latency_is_refused_outside_http_with_the_alternative(kind: str) -> None:
    data = {"name": "m", "interval": 60, **TARGETS[kind], "degraded_latency_ms": 500}
    try:
        validate_definition(normalise(with_defaults(data, timeout_max=60)), min_interval=10, timeout_max=60)
    except InvalidData as exc:
        found = {e["path"]: e["msg"] for e in exc.errors or []}
    else:
        found = {}
    hint = "warn: response_time < N" if kind in ("dns", "websocket", "tcp") else "no latency threshold"
    assert "degraded_latency_ms applies to http monitors" in found.get("degraded_latency_ms", "")
    assert hint in found["degraded_latency_ms"]


def test_changing_kind_clears_the_degraded_latency_unless_sent() -> None:
    current = normalise(
        with_defaults({"name": "api", **TARGETS["http"], "degraded_latency_ms": 800}, timeout_max=60)
    )
    merged = merge_update(current, dict(TARGETS["tcp"]), timeout_max=60)
    assert merged["degraded_latency_ms"] is None
    validate_definition(normalise(merged), min_interval=10, timeout_max=60)
    assert merge_update(current, {"name": "renamed"}, timeout_max=60)["degraded_latency_ms"] == 800
