"""Message templates (the sandbox and its bounds) and quiet-hours windows: pure, no services."""

from __future__ import annotations

import datetime as dt

import pytest

from app.alerting import message, schedule, templates
from app.alerting.message import Alert

AT = dt.datetime(2026, 11, 22, 4, 30, 5, tzinfo=dt.UTC)


def _alert(**extra: object) -> Alert:
    fields: dict[str, object] = {
        "monitor_name": "checkout-api",
        "state": "down",
        "previous_state": "up",
        "reason": "HTTP 503",
        "at": AT,
        "monitor_id": 7,
        "incident_id": 12,
        "tenant_name": "acme",
        "timezone": "Europe/Berlin",
    }
    fields.update(extra)
    return Alert(**fields)  # type: ignore[arg-type]


def test_variables_render_with_times_in_the_tenant_timezone() -> None:
    subject, body = templates.render(
        {
            "subject": "{{ monitor.name|upper }} {{ state }} (was {{ previous_state }})",
            "body": "{{ tenant.name }} #{{ incident.id }} at {{ time }} / {{ time_utc }}: {{ reason }}",
        },
        _alert(),
    )
    assert subject == "CHECKOUT-API down (was up)"
    assert body == "acme #12 at 2026-11-22 05:30:05 CET / 2026-11-22 04:30:05 UTC: HTTP 503"


def test_no_template_keeps_the_default_message() -> None:
    alert = _alert()
    assert templates.render(None, alert) == (None, None)
    assert message.text(alert).startswith("[Watchpost] checkout-api is DOWN\nMonitor: checkout-api\n")


def test_subject_is_one_line_and_bounded() -> None:
    subject, _ = templates.render({"subject": "a\nb{{ 'x' * 500 }}"}, _alert())
    assert subject is not None and "\n" not in subject and len(subject) <= templates.SUBJECT_OUTPUT_MAX


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("ok\n{{ monitor.name }", "line 2"),
        ("{{ state|center(99999999) }}", "No filter named 'center'"),
        ("{% include 'x' %}", "include is not allowed"),
        (
            "{% for a in range(2) %}{% for b in range(2) %}{% for c in range(2) %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "nest",
        ),
        ("{{ 'ab' * 6000 }}", "longer than"),
        (
            "{{ monitor.name" + "|replace('c', 'cccccccccccccccccccc')" * 3 + " }}",
            "replace filter",
        ),
        ("{{ 10 ** 100000 }}", "exponents"),
        ("{{ ((10 ** 64) ** 64) ** 64 }}", "exponents"),
        ("{% for i in range(100000) %}{% endfor %}", "range"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ reason.ljust(100000000) }}", "calling ljust() is not allowed"),
        ("{{ '{:>99999999}'.format(1) }}", "calling format() is not allowed"),
        ("{{ '%99999999s' % 1 }}", "formatting with %"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(source: str, words: str) -> None:
    with pytest.raises(templates.PartProblem) as caught:
        templates.validate({"body": source})
    assert caught.value.part == "body"
    assert words in caught.value.problem.msg


def test_safe_methods_and_loops_work() -> None:
    _, body = templates.render(
        {
            "body": "{{ monitor.name.split('-')|join('+') }} "
            "{% for i in range(3) %}{{ loop.cycle('a', 'b') }}{% endfor %}"
        },
        _alert(),
    )
    assert body == "checkout+api aba"


def test_the_sandbox_keeps_python_internals_out() -> None:
    _, body = templates.render({"body": "{{ monitor.__class__ }}{{ ''.__class__.__mro__ }}"}, _alert())
    assert body == ""


def test_quiet_window_across_midnight_in_local_time() -> None:
    quiet = {"timezone": "Europe/Berlin", "windows": [{"days": ["fri"], "start": "22:00", "end": "07:00"}]}
    friday_evening = dt.datetime(2026, 12, 4, 21, 30, tzinfo=dt.UTC)  # 22:30 in Berlin
    assert schedule.quiet_until(quiet, friday_evening) == dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)
    assert schedule.quiet_until(quiet, dt.datetime(2026, 12, 4, 20, 59, tzinfo=dt.UTC)) is None
    assert schedule.quiet_until(quiet, dt.datetime(2026, 12, 5, 6, 0, tzinfo=dt.UTC)) is None
    # Thursday night is not in the window: it opens on Fridays only.
    assert schedule.quiet_until(quiet, dt.datetime(2026, 12, 3, 23, 0, tzinfo=dt.UTC)) is None


def test_back_to_back_windows_hold_until_the_last_ends_and_the_tenant_zone_is_the_default() -> None:
    quiet = {"windows": [{"start": "20:00", "end": "22:00"}, {"start": "22:00", "end": "23:30"}]}
    at = dt.datetime(2026, 7, 1, 18, 30, tzinfo=dt.UTC)  # 20:30 in Berlin (summer time)
    assert schedule.quiet_until(quiet, at, "Europe/Berlin") == dt.datetime(2026, 7, 1, 21, 30, tzinfo=dt.UTC)
    assert schedule.quiet_until(quiet, at) is None  # 18:30 UTC
