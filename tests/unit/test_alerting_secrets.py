"""Which fields of a channel's config are secrets, and how they are scrubbed from text
(the senders against real receivers: tests/test_alerting_senders.py)."""

from __future__ import annotations

from app.alerting import senders


def test_secrets_of_lists_every_secret_field() -> None:
    webhook = {"url": "https://h/x?k=1", "secret": "s", "headers": {"Authorization": "Bearer t"}}
    assert set(senders.secrets_of("webhook", webhook)) == {"https://h/x?k=1", "s", "Bearer t"}
    assert senders.secrets_of("slack", {"url": "https://hooks/T/B/X"}) == ["https://hooks/T/B/X"]
    assert senders.secrets_of("email", {"password": "pw", "username": "u"}) == ["pw"]
    assert senders.scrub("a pw b https://hooks/T/B/X", ["pw", "https://hooks/T/B/X"]) == "a *** b ***"
