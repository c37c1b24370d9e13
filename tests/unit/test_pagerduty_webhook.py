"""PagerDuty webhook verification and parsing (app.alerting.pagerduty_webhook), no services."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from app.alerting.pagerduty_webhook import actor, incident_id, sign, signature_ok
from app.errors import InvalidData

SECRET = "whsec-0123456789"
BODY = b'{"event": {"event_type": "incident.acknowledged"}}'


def test_the_signature_is_pagerdutys_v1_hmac_sha256_of_the_raw_body() -> None:
    expected = "v1=" + hmac.new(SECRET.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY) == expected
    assert signature_ok(SECRET, BODY, expected)


def test_one_valid_signature_among_several_is_enough() -> None:
    good = sign(SECRET, BODY)
    assert signature_ok(SECRET, BODY, f"v1={'0' * 64},{good}")
    assert signature_ok(SECRET, BODY, f"{good}, v1={'f' * 64}")


def test_wrong_missing_and_malformed_signatures_are_refused() -> None:
    good = sign(SECRET, BODY)
    assert not signature_ok("another-secret", BODY, good)
    assert not signature_ok(SECRET, BODY + b" ", good)  # the exact bytes are signed
    assert not signature_ok(SECRET, BODY, None)
    assert not signature_ok(SECRET, BODY, "")
    assert not signature_ok(SECRET, BODY, good[3:])  # without the v1= version
    assert not signature_ok(SECRET, BODY, good.upper())
    assert not signature_ok(SECRET, BODY, "v1=" + "0" * 64)
    # A header too long to be PagerDuty's is refused without comparing it all.
    assert not signature_ok(SECRET, BODY, ",".join(["v1=" + "0" * 64] * 40) + "," + good)
    # Only the first few signatures are looked at.
    assert not signature_ok(SECRET, BODY, ",".join(["v1=x"] * 8) + "," + good)


def test_only_watchpost_incident_keys_name_an_incident() -> None:
    assert incident_id("watchpost-incident-42") == 42
    for key in (
        None,
        42,
        "",
        "watchpost-incident-",
        "watchpost-incident-0",
        "watchpost-incident-042",
        "watchpost-incident-4x",
        "watchpost-incident-42 ",
        "xwatchpost-incident-42",
        "watchpost-monitor-3-1700000000",
        "watchpost-incident-" + "9" * 19,
    ):
        assert incident_id(key) is None, key


def test_the_actor_names_the_pagerduty_agent() -> None:
    assert actor({"id": "PLH1HKV", "summary": "Ada Lovelace"}) == "pagerduty:Ada Lovelace"
    assert actor({"id": "PLH1HKV", "summary": ""}) == "pagerduty:PLH1HKV"
    assert actor(None) == "pagerduty:unknown"
    assert actor({"summary": "Ada\x00\nLovelace"}) == "pagerduty:AdaLovelace"
    assert len(actor({"summary": "x" * 1000})) == len("pagerduty:") + 150


def test_the_webhook_secret_is_masked_validated_and_scrubbed() -> None:
    from app.alerting import channels, senders

    config = channels.validate_config("pagerduty", {"routing_key": "R" * 32, "webhook_secret": SECRET})
    assert config["webhook_secret"] == SECRET
    assert channels.mask_config("pagerduty", config)["webhook_secret"] == "***"
    assert channels.mask_config("pagerduty", {"routing_key": "R" * 32})["webhook_secret"] is None
    assert channels.mask_patch({"webhook_secret": SECRET}) == {"webhook_secret": "***"}
    assert (
        senders.scrub(f"failed with {SECRET}", senders.secrets_of("pagerduty", config)) == "failed with ***"
    )
    # "***" keeps the stored secret; null removes it.
    assert channels.apply_patch("pagerduty", config, {"webhook_secret": "***"})["webhook_secret"] == SECRET
    assert "webhook_secret" not in channels.apply_patch("pagerduty", config, {"webhook_secret": None})
    with pytest.raises(InvalidData, match=r"config\.webhook_secret"):
        channels.validate_config("pagerduty", {"routing_key": "R" * 32, "webhook_secret": "short"})
