"""DeliveryOptions.from_settings: every DELIVERY_* setting reaches the worker."""

from __future__ import annotations

from app.alerting.backoff import RetryPolicy
from app.alerting.worker import DeliveryOptions
from app.settings import Settings


def test_every_delivery_setting_is_read() -> None:
    settings = Settings.from_env(
        env={
            "DELIVERY_TIMEOUT": "3",
            "DELIVERY_POLL_INTERVAL": "0.25",
            "DELIVERY_BATCH": "7",
            "DELIVERY_LEASE": "500",
            "DELIVERY_BACKOFF_BASE": "2",
            "DELIVERY_BACKOFF_CAP": "40",
            "DELIVERY_MAX_ATTEMPTS": "4",
            "CHANNEL_FLAG_AFTER": "9",
            "REMINDER_SCAN_INTERVAL": "12",
            "DELIVERY_RETENTION_DAYS": "3",
        }
    )
    assert DeliveryOptions.from_settings(settings) == DeliveryOptions(
        timeout=3.0,
        poll_interval=0.25,
        batch=7,
        lease=500.0,
        policy=RetryPolicy(base=2.0, cap=40.0, max_attempts=4),
        flag_after=9,
        reminder_interval=12.0,
        retention_days=3,
    )


def test_lease_outlasts_four_send_timeouts() -> None:
    """A live worker must never lose its lease mid-send, whatever DELIVERY_LEASE says."""
    settings = Settings.from_env(env={"DELIVERY_TIMEOUT": "30", "DELIVERY_LEASE": "5"})
    assert DeliveryOptions.from_settings(settings).lease == 30 * 4 + 10
