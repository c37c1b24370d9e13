"""Prometheus metrics of alert delivery, on the process registry of ``app.metrics``.

Labels are bounded: ``kind`` is a channel kind, ``result`` and ``status`` are
fixed words. Channel and monitor ids never become labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from app.metrics import REGISTRY

ATTEMPTS = Counter(
    "alert_delivery_attempts_total",
    "Alert send attempts by channel kind and result (ok, transient, permanent)",
    ["kind", "result"],
    registry=REGISTRY,
)
FINISHED = Counter(
    "alert_deliveries_finished_total",
    "Alert deliveries that reached a final status (delivered, failed, cancelled)",
    ["kind", "status"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "alert_delivery_attempt_duration_seconds",
    "Time of one alert send attempt",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
HELD = Counter(
    "alert_deliveries_held_total",
    "Alert deliveries put off by a channel's quiet hours (a held delivery counts each time)",
    ["kind"],
    registry=REGISTRY,
)
FLAGGED = Counter(
    "alert_channels_flagged_total",
    "Channels flagged after too many failed deliveries in a row",
    registry=REGISTRY,
)
