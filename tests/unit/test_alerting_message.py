"""What alerts say: headline, body, and that user text cannot inject markup or headers."""

from __future__ import annotations

import datetime as dt

from app.alerting import message
from app.alerting.message import Alert

AT = dt.datetime(2026, 11, 22, 4, 30, 5, tzinfo=dt.UTC)


def test_state_change_text_names_monitor_state_reason_and_time() -> None:
    alert = Alert("api", "down", AT, monitor_id=7, previous_state="up", reason="HTTP 503")
    assert message.subject(alert) == "[Watchpost] api is DOWN"
    assert message.text(alert).splitlines() == [
        "[Watchpost] api is DOWN",
        "Monitor: api",
        "State: down",
        "Previous state: up",
        "Reason: HTTP 503",
        "Time: 2026-11-22 04:30:05 UTC",
    ]


def test_reminder_and_test_headlines() -> None:
    assert message.subject(Alert("db", "down", AT, kind="reminder")) == "[Watchpost] db is still DOWN"
    test = Alert("db", "up", AT, kind="test")
    assert message.subject(test) == "[Watchpost] Test message for db"
    assert "test message" in message.text(test)


def test_control_characters_in_names_cannot_add_lines_or_headers() -> None:
    alert = Alert("evil\r\nBcc: someone@example.com", "down", AT, reason="a\nb")
    assert "\r" not in message.subject(alert) and "\n" not in message.subject(alert)
    assert "Reason: a b" in message.text(alert)


def test_slack_text_is_escaped_so_names_cannot_mention_or_link() -> None:
    payload = message.slack_payload(Alert("<!channel> & <http://x|y>", "down", AT))
    assert "<" not in payload["text"] and "&lt;!channel&gt; &amp;" in payload["text"]


def test_discord_content_is_bounded_and_never_pings() -> None:
    payload = message.discord_payload(Alert("@everyone", "down", AT, reason="x" * 5000))
    assert len(payload["content"]) <= message.DISCORD_MAX_CONTENT
    assert payload["allowed_mentions"] == {"parse": []}


def test_webhook_payload_shape() -> None:
    alert = Alert("api", "up", AT, monitor_id=3, previous_state="down", delivery_id=42)
    assert message.webhook_payload(alert) == {
        "event": "monitor.state_changed",
        "delivery_id": 42,
        "monitor": {"id": 3, "name": "api"},
        "state": "up",
        "previous_state": "down",
        "reason": None,
        "at": "2026-11-22T04:30:05+00:00",
        "text": message.text(alert),
    }
