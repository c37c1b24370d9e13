"""The condition language, certificate thresholds, request secrets and the degraded state:
pure functions, no I/O."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from app.errors import InvalidData
from app.monitoring import certs
from app.monitoring.conditions import (
    MAX_CONDITION_LENGTH,
    MAX_PATH_DEPTH,
    Answer,
    ConditionError,
    check,
    evaluate,
    parse,
)
from app.monitoring.definition import merge_update, monitor_to_wire, validate_definition, with_defaults
from app.monitoring.request import keep_masked_secrets, mask_request, request_headers
from app.monitoring.state import State, step

HEALTH = b'{"status": "DEGRADED", "queue": {"depth": 250}, "items": [{"name": "a"}], "ok": true}'


def answer(**kw: object) -> Answer:
    base: dict[str, object] = {
        "status_code": 200,
        "latency_ms": 42.0,
        "body": HEALTH,
        "headers": {"Content-Type": "application/json", "X-Version": "7"},
        "cert_days": 10,
    }
    base.update(kw)
    return Answer(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "failure"),
    [
        ('$.status == "UP"', '$.status: expected "UP", got "DEGRADED"'),
        ("$.queue.depth < 100", "$.queue.depth: expected < 100, got 250"),
        ("$.queue.depth >= 251", "$.queue.depth: expected >= 251, got 250"),
        ('$.items[0].name == "b"', '$.items[0].name: expected "b", got "a"'),
        ("$.items[3].name == 1", "$.items[3].name: expected 1, got nothing (no such path)"),
        ("$.ok == false", "$.ok: expected false, got true"),
        ("status == 204", "status: expected 204, got 200"),
        ("status != 200", "status: expected != 200, got 200"),
        ("response_time < 10", "response_time: expected < 10, got 42.0"),
        ('body contains "UP"', 'body: expected to contain "UP"'),
        ('body not contains "DEGRADED"', 'body: expected not to contain "DEGRADED"'),
        (
            'header.content-type contains "xml"',
            'header.content-type: expected contains "xml", got "application/json"',
        ),
        ("header.x-version > 7", 'header.x-version: expected > 7, got "7"'),
        ('header.x-missing == "a"', 'header.x-missing: expected "a", got no such header'),
        ("cert_days >= 14", "cert_days: expected >= 14, got 10"),
    ],
)
def test_failing_condition_names_what_it_saw(text: str, failure: str) -> None:
    assert check(parse(text), answer()) == failure


@pytest.mark.parametrize(
    "text",
    [
        '$.status == "DEGRADED"',
        "$.queue.depth < 251",
        '$["queue"]["depth"] == 250',
        '$.items[0].name != "b"',
        "$.ok == true",
        "$.items[0].name != null",
        "status == 200",
        "response_time <= 42",
        'body contains "queue"',
        'header.Content-Type contains "json"',
        "header.x-version == 7",
        "cert_days > 7",
        "  warn:  status  ==  200  ",
    ],
)
def test_passing_condition(text: str) -> None:
    assert check(parse(text), answer()) is None


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("status = 200", 8, "expected an operator"),
        ("stauts == 200", 1, "unknown subject 'stauts'"),
        ('$.status == "UP', 13, "not closed"),
        ('$.a.b < "x"', 9, "compares numbers"),
        ("body < 3", 6, "body takes contains"),
        ("status contains 20", 8, "status is a number"),
        ("$.a[x] == 1", 5, "list index"),
        ("$.a. == 1", 5, "member name"),
        ("status == 200 or 204", 15, "after the value"),
        ("status == UP", 11, "is not a value"),
        ("header == 1", 7, "header.NAME"),
        ("", 1, "empty condition"),
        ("cert_days > 1e999", 13, "finite"),
        ('$.a == "x\\n"', 10, "escapes"),
    ],
)
def test_invalid_condition_names_the_column(text: str, column: int, words: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse(text)
    assert caught.value.position == column, str(caught.value)
    assert words in str(caught.value)
    assert str(caught.value).startswith(f"column {column}: ")


def test_bounds_on_length_and_depth_are_cheap() -> None:
    with pytest.raises(ConditionError, match="at most 500 characters"):
        parse("status == " + "1" * MAX_CONDITION_LENGTH)
    deep = "$" + ".a" * (MAX_PATH_DEPTH + 1) + " == 1"
    with pytest.raises(ConditionError, match="at most 32 steps"):
        parse(deep)
    ok_depth = parse("$" + ".a" * MAX_PATH_DEPTH + " == 1")
    assert len(ok_depth.path) == MAX_PATH_DEPTH
    # A hostile body (deeply nested JSON) fails the condition, never the evaluator.
    nested = b"[" * 100_000 + b"]" * 100_000
    started = time.perf_counter()
    failure = check(parse("$.a == 1"), answer(body=nested))
    assert failure is not None and "not JSON" in failure
    assert time.perf_counter() - started < 5


def test_warn_conditions_degrade_and_the_rest_fail() -> None:
    verdict = evaluate(
        [parse('$.status == "UP"'), parse("warn: response_time < 10"), parse("status == 200")], answer()
    )
    assert verdict.failed == ('$.status: expected "UP", got "DEGRADED"',)
    assert verdict.warned == ("response_time: expected < 10, got 42.0",)


def _values(**fields: object) -> dict[str, object]:
    return with_defaults(
        {"name": "x", "kind": "http", "url": "https://example.com/", **fields}, timeout_max=60
    )


def test_definition_refuses_a_bad_condition_with_its_index_and_column() -> None:
    with pytest.raises(InvalidData) as caught:
        validate_definition(
            _values(conditions=["status == 200", "$.status = 'UP'"]), min_interval=1, timeout_max=60
        )
    errors = caught.value.errors
    assert errors is not None
    assert errors[0]["path"] == "conditions[1]"
    assert errors[0]["msg"].startswith("conditions[1] at column 10: expected an operator")


def test_definition_checks_auth_headers_and_ranges() -> None:
    with pytest.raises(InvalidData) as caught:
        validate_definition(
            _values(
                auth={"type": "basic", "username": "u"},
                headers={"Host": "x", "X-Token": "***"},
                max_redirects=21,
                degraded_latency_ms=20_000,
                cert_alert_days=[0],
            ),
            min_interval=1,
            timeout_max=60,
        )
    paths = {e["path"] for e in caught.value.errors or []}
    assert paths == {
        "auth.password",
        "headers.Host",
        "headers.X-Token",
        "max_redirects",
        "degraded_latency_ms",
        "cert_alert_days",
    }


def test_request_secrets_are_masked_and_kept_when_sent_back() -> None:
    stored = {
        "headers": {"X-Api-Key": "k-123456", "Accept": "application/json"},
        "auth": {"type": "basic", "username": "ops", "password": "s3cret-pw"},
    }
    headers, auth = mask_request(stored["headers"], stored["auth"])
    assert headers == {"X-Api-Key": "***", "Accept": "application/json"}
    assert auth == {"type": "basic", "username": "ops", "password": "***"}
    kept = keep_masked_secrets(stored, {"headers": headers, "auth": auth})
    assert kept == stored
    # A different user never inherits the stored password.
    other = keep_masked_secrets(stored, {"auth": {"type": "basic", "username": "eve", "password": "***"}})
    assert other["auth"]["password"] == "***"
    merged = merge_update(
        {**_values(), **stored},
        {"auth": {"type": "basic", "username": "ops", "password": "***"}},
        timeout_max=60,
    )
    assert merged["auth"]["password"] == "s3cret-pw"
    sent = request_headers(stored["headers"], stored["auth"])
    assert sent["Authorization"] == "Basic b3BzOnMzY3JldC1wdw=="
    assert request_headers({}, {"type": "bearer", "token": "tok-1"})["Authorization"] == "Bearer tok-1"


def test_wire_form_masks_auth_and_secret_headers() -> None:
    row = {
        **{k: None for k in ("id", "state_changed_at", "last_checked_at", "cert_expires_at", "created_at")},
        **_values(
            headers={"Authorization": "Bearer abc", "X-Env": "prod"},
            auth={"type": "bearer", "token": "tok-secret"},
        ),
    }
    for name in (
        "updated_at",
        "state",
        "version",
        "push_token",
        "last_latency_ms",
        "last_status_code",
        "last_error",
        "cert_issuer",
    ):
        row.setdefault(name, None)
    wire = monitor_to_wire(row)
    assert wire["headers"] == {"Authorization": "***", "X-Env": "prod"}
    assert wire["auth"] == {"type": "bearer", "token": "***"}
    assert "tok-secret" not in repr(wire) and "abc" not in repr(wire)


@pytest.mark.parametrize(
    ("days_left", "configured", "alerted", "due"),
    [
        (30, None, None, None),
        (21, None, None, 21),
        (10, None, None, 14),  # the tightest crossed threshold only, not 21 as well
        (10, None, 14, None),  # once per threshold
        (6, None, 14, 7),
        (6, None, 7, None),
        (-2, None, 7, None),
        (10, [30], None, 30),
        (10, [], None, None),  # [] turns certificate alerts off
    ],
)
def test_certificate_threshold_due(
    days_left: int, configured: list[int] | None, alerted: int | None, due: int | None
) -> None:
    assert certs.due_threshold(days_left, configured, alerted) == due


def test_certificate_renewal_and_reason() -> None:
    now = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    assert certs.renewed(None, now)
    assert not certs.renewed(now, now + dt.timedelta(minutes=5))
    assert certs.renewed(now, now + dt.timedelta(days=60))
    text = certs.describe(10, now, 14, "CN=Test CA")
    assert (
        text
        == "TLS certificate expires in 10 days (2026-12-05 00:00 UTC), 14-day threshold; issuer CN=Test CA"
    )


def test_degraded_is_neither_up_nor_down() -> None:
    s = step("up", 0, 3, True, degraded=True)
    assert s.state == State.DEGRADED and s.transition == (State.UP, State.DEGRADED)
    s = step("degraded", 0, 4, True)
    assert s.state == State.UP
    # A failure below the threshold keeps it degraded ("retrying"), not pending.
    s = step("degraded", 0, 4, False, fail_threshold=2)
    assert s.state == State.DEGRADED and s.transition is None
    s = step("degraded", 1, 0, False, fail_threshold=2)
    assert s.state == State.DOWN
    s = step("pending", 0, 0, True, degraded=True, recover_threshold=2)
    assert s.state == State.PENDING


def test_fleet_export_masks_request_secrets_and_skips_defaults() -> None:
    from app.monitoring.fleet import to_row

    definition = _values(
        headers={"X-Api-Key": "key-123456", "X-Env": "prod"},
        auth={"type": "bearer", "token": "tok-secret"},
        conditions=['$.status == "UP"'],
    )
    row = to_row(definition, "api", member_names={}, channel_names={}, timeout_max=60)
    assert row["headers"] == {"X-Api-Key": "***", "X-Env": "prod"}
    assert row["auth"] == {"type": "bearer", "token": "***"}
    assert row["conditions"] == ['$.status == "UP"']
    old = {**_values(), "headers": None, "conditions": None, "max_redirects": None, "cert_alert_days": None}
    assert set(to_row(old, "old", member_names={}, channel_names={}, timeout_max=60)) == {
        "name",
        "kind",
        "url",
    }


def test_certificate_alert_message_and_secret_scrubbing() -> None:
    from app.alerting.message import Alert, subject, text, webhook_payload
    from app.monitoring.checks import CheckOutcome, scrub_secrets

    at = dt.datetime(2026, 12, 5, 3, 40, tzinfo=dt.UTC)
    reason = certs.describe(10, at + dt.timedelta(days=10), 14, "CN=R11")
    alert = Alert("shop", "certificate", at, kind="certificate", monitor_id=3, reason=reason)
    assert subject(alert) == "[Watchpost] shop: TLS certificate expires soon"
    assert text(alert).splitlines()[2] == f"Certificate: {reason}"
    assert "State:" not in text(alert)
    assert webhook_payload(alert)["event"] == "monitor.certificate_expiring"
    out = scrub_secrets(CheckOutcome(False, error="401 for token tok-abcdef"), ["tok-abcdef"])
    assert out.error == "401 for token ***"
