"""The quorum rule of docs/probes.md ("How the state is decided") on hand-made latest results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.models.monitor import Monitor
from app.models.probe import LocationResult
from app.monitoring.checks import CheckOutcome
from app.monitoring.locations import decide, freshness, status_wire

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
GRACE = 90.0


def monitor(locations: list[str], quorum: int = 1, interval: int = 60) -> Monitor:
    return Monitor(
        id=1, tenant_id=1, name="m", kind="http", locations=locations, quorum=quorum, interval=interval
    )


def row(
    location: str, state: str, age: float = 5, latency: float | None = 10.0, error: str | None = None
) -> LocationResult:
    return LocationResult(
        monitor_id=1,
        location=location,
        tenant_id=1,
        state=state,
        checked_at=NOW - timedelta(seconds=age),
        latency_ms=latency if state == "up" else None,
        error=error if state == "down" else None,
    )


def test_fewer_down_than_quorum_is_up_with_the_median_latency() -> None:
    rows = [row("a", "down", error="refused"), row("b", "up", latency=10), row("c", "up", latency=30)]
    out = decide(monitor(["a", "b", "c"], quorum=2), rows, now=NOW, grace=GRACE, local=None)
    assert out == CheckOutcome(True, 20.0, None, None)


def test_quorum_down_names_every_down_location_in_order() -> None:
    rows = [row("b", "down", error="timed out"), row("a", "down", error="refused"), row("c", "up")]
    out = decide(monitor(["a", "b", "c"], quorum=2), rows, now=NOW, grace=GRACE, local=None)
    assert out is not None and not out.ok
    assert out.error == "down in a, b (2 of 3 locations, quorum 2): a: refused; b: timed out"


def test_stale_results_are_unknown_and_not_counted() -> None:
    m = monitor(["a", "b"], quorum=1, interval=60)
    stale = row("a", "down", age=60 + GRACE + 1, error="refused")
    assert freshness(stale.checked_at, stale.state, 60, GRACE, NOW) == "unknown"
    assert decide(m, [stale, row("b", "up")], now=NOW, grace=GRACE, local=None) == CheckOutcome(True, 10.0)
    assert decide(m, [stale], now=NOW, grace=GRACE, local=None) is None  # all unknown: nothing recorded
    assert decide(m, [], now=NOW, grace=GRACE, local=None) is None


def test_the_local_check_is_the_outcome_when_up_and_not_when_alone_down() -> None:
    local_up = CheckOutcome(True, 3.0, 200, None, degraded=True, warning="slow")
    m = monitor(["local", "a"], quorum=2)
    rows = [row("local", "up", latency=3.0), row("a", "down", error="refused")]
    assert decide(m, rows, now=NOW, grace=GRACE, local=local_up) is local_up
    local_down = CheckOutcome(False, None, 500, "status 500")
    rows = [row("local", "down", error="status 500"), row("a", "up", latency=40.0)]
    assert decide(m, rows, now=NOW, grace=GRACE, local=local_down) == CheckOutcome(True, 40.0)


def test_the_error_is_cut_to_300_characters() -> None:
    names = [f"location-{i:02d}" for i in range(16)]
    rows = [row(n, "down", error="x" * 300) for n in names]
    out = decide(monitor(names, quorum=16), rows, now=NOW, grace=GRACE, local=None)
    assert out is not None and out.error is not None
    assert len(out.error) == 300 and out.error.endswith("…")
    assert out.error.startswith("down in location-00, location-01")


def test_status_wire_lists_every_location_in_the_monitors_order() -> None:
    got = status_wire(["b", "a"], [row("a", "up")], interval=60, grace=GRACE, now=NOW)
    assert [(s["location"], s["state"], s["latency_ms"]) for s in got] == [
        ("b", "unknown", None),
        ("a", "up", 10.0),
    ]
