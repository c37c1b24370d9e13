"""Which assignment events (906) one monitor change sends to which location (app.monitoring.assignments)."""

from __future__ import annotations

from typing import Any

from app.monitoring import assignments


def _monitor(**over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": 7,
        "name": "api",
        "kind": "http",
        "interval": 60,
        "timeout": 10.0,
        "version": 1,
        "url": "https://user:pw@example.com/",
        "method": "GET",
        "headers": {"Authorization": "Bearer s"},
        "body": None,
        "auth": {"type": "basic", "username": "u", "password": "p"},
        "expected_status": ["200-399"],
        "keyword": None,
        "conditions": [],
        "verify_tls": True,
        "follow_redirects": True,
        "max_redirects": None,
        "degraded_latency_ms": None,
        "host": None,
        "port": None,
        "options": {},
        "enabled": True,
        "locations": ["local", "eu"],
        "channels": [3],
        "tags": ["a"],
    }
    return assignments.snapshot({**row, **over})


def test_definition_keeps_secrets_and_leaves_routing_out() -> None:
    d = assignments.definition(_monitor())
    assert d["url"] == "https://user:pw@example.com/" and d["auth"]["password"] == "p"
    assert d["headers"] == {"Authorization": "Bearer s"} and d["max_redirects"] == 10
    assert "channels" not in d and "tags" not in d and "enabled" not in d
    assert tuple(d) == assignments.DEFINITION_FIELDS


def test_changes_per_location() -> None:
    m = _monitor()
    assert assignments.changes(None, m) == {"eu": {"op": "upsert", "monitor": assignments.definition(m)}}
    assert assignments.changes(m, None) == {"eu": {"op": "remove", "monitor_id": 7}}
    moved = _monitor(locations=["us", "local"], version=2)
    assert assignments.changes(m, moved) == {
        "us": {"op": "upsert", "monitor": assignments.definition(moved)},
        "eu": {"op": "remove", "monitor_id": 7},
    }
    assert assignments.changes(m, _monitor(enabled=False, version=2)) == {
        "eu": {"op": "remove", "monitor_id": 7}
    }
    # A new version without a definition change (tags, channels) is no news to a probe.
    assert assignments.changes(m, _monitor(tags=["b"], channels=[], version=2)) == {}
    assert assignments.changes(m, _monitor(interval=30, version=2))["eu"]["op"] == "upsert"
    local = _monitor(locations=["local"])
    assert assignments.changes(None, local) == {} and assignments.changes(local, None) == {}


def test_a_large_batch_becomes_one_reload_per_location() -> None:
    many = [(None, _monitor(id=i, name=f"m{i}")) for i in range(assignments.EVENT_LIMIT + 1)]
    few = [(None, _monitor(id=10_000, locations=["us"]))]
    grouped = assignments.group(many + few)
    assert grouped["eu"] == [{"op": "reload"}]
    assert [e["op"] for e in grouped["us"]] == ["upsert"]
    assert len(assignments.group(many[:-1])["eu"]) == assignments.EVENT_LIMIT
