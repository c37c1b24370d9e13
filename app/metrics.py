"""Prometheus metric objects (one registry for the process).

Label values are bounded: route templates, pkg ids, fixed status words — never
raw paths, user ids or topics. Each process serves its own /metrics; with
several processes on one host, give each its own port and scrape them all
(docs/operations.md).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)


class LoopCounter(Collector):
    """An unlabelled counter for per-frame events, bumped only on the event loop thread.

    prometheus-client's Counter takes a lock on every ``inc()``; at tens of
    thousands of frames a second that lock was ~4 % of the server's CPU
    (py-spy, make bench). These counters are touched only from the event loop
    (one thread), so a plain integer is exact; it is read at scrape time.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0
        registry.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self.name, self.documentation)


_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

APP_INFO = Gauge(
    "app_info",
    "Build and runtime information",
    ["version", "python_version", "environment"],
    registry=REGISTRY,
)

HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests", ["method", "endpoint", "status_code"], registry=REGISTRY
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration",
    ["method", "endpoint"],
    buckets=_FAST,
    registry=REGISTRY,
)
HTTP_IN_PROGRESS = Gauge(
    "http_requests_in_progress", "HTTP requests in progress", ["method", "endpoint"], registry=REGISTRY
)

WS_ACTIVE = Gauge("ws_connections_active", "Open WebSocket connections", registry=REGISTRY)
WS_CONNECTIONS = Counter(
    "ws_connections_total", "WebSocket handshakes by outcome", ["status"], registry=REGISTRY
)
WS_RECEIVED = LoopCounter("ws_messages_received", "Frames received", REGISTRY)
WS_SENT = LoopCounter("ws_messages_sent", "Frames sent", REGISTRY)
WS_PROCESSING = Histogram(
    "ws_message_processing_duration_seconds",
    "Handler time per package",
    ["pkg_id"],
    buckets=_FAST,
    registry=REGISTRY,
)
WS_SLOW_CONSUMERS = Counter(
    "ws_slow_consumer_closes_total", "Connections closed with 4009 (send queue overflow)", registry=REGISTRY
)
WS_CLOSES = Counter("ws_closes_total", "Server-initiated closes by code", ["code"], registry=REGISTRY)

RATE_LIMIT_HITS = Counter(
    "rate_limit_hits_total", "Requests refused by a limit", ["limit_type"], registry=REGISTRY
)
AUTH_ATTEMPTS = Counter("auth_attempts_total", "Authentication attempts", ["status"], registry=REGISTRY)

EVENTS_PUBLISHED = Counter("events_published_total", "Events published to the broker", registry=REGISTRY)
EVENTS_DELIVERED = LoopCounter("events_delivered", "Events queued to subscribed connections", REGISTRY)
BROKER_ERRORS = Counter("broker_errors_total", "Broker operations that failed", registry=REGISTRY)
DB_ERRORS = Counter("db_errors_total", "Database operations that failed (unavailable)", registry=REGISTRY)
REDIS_ERRORS = Counter("redis_errors_total", "Redis operations that failed", ["component"], registry=REGISTRY)

CHECKS = Counter("checks_total", "Checks run", ["kind", "result"], registry=REGISTRY)
CHECK_DURATION = Histogram(
    "check_duration_seconds",
    "Check duration",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
COLLECTOR_LAG = Gauge("collector_lag", "Due, unleased monitors (read at scrape time)", registry=REGISTRY)
OUTBOX_DEPTH = Gauge("outbox_depth", "Alert deliveries pending (read at scrape time)", registry=REGISTRY)
# Delivery attempts by kind and result live in app.alerting.metrics (alert_delivery_*).


def set_app_info(version: str, environment: str) -> None:
    APP_INFO.labels(version=version, python_version=platform.python_version(), environment=environment).set(1)


_processing_children: dict[int, Histogram] = {}


def observe_processing(pkg_id: int, seconds: float) -> None:
    """Hot path: cache the labelled child per pkg_id (labels() costs a dict build)."""
    child = _processing_children.get(pkg_id)
    if child is None:
        child = WS_PROCESSING.labels(pkg_id=str(pkg_id))
        _processing_children[pkg_id] = child
    child.observe(seconds)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
