"""Definitions of the dns, postgres, redis, websocket and ping kinds without a server:
per-kind validation with paths, secret options masked on the wire and in export rows,
"***" keeping a stored secret on update, and CHECK_PING deciding whether ping is allowed
(the runners against real targets: tests/test_monitoring_kinds.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from app.errors import InvalidData
from app.monitoring import kinds
from app.monitoring.definition import (
    merge_update,
    monitor_to_wire,
    normalise,
    validate_definition,
    with_defaults,
)
from app.monitoring.fleet import to_row
from app.monitoring.kinds import ping

DSN = "postgresql://watch:pw-s3cret@db.internal:5432/app?password=q-s3cret"


def problems(data: dict[str, Any]) -> dict[str, str]:
    values = normalise(with_defaults({"name": "m", "interval": 60, **data}, timeout_max=60))
    try:
        validate_definition(values, min_interval=10, timeout_max=60)
    except InvalidData as exc:
        return {e["path"]: e["msg"] for e in exc.errors or []}
    return {}


@pytest.fixture
def ping_mode() -> Iterator[Any]:
    yield ping.install_mode
    ping.install_mode("auto")


def test_good_definitions_pass() -> None:
    assert problems({"kind": "dns", "host": "_sip._tcp.example.com", "options": {"record_type": "SRV"}}) == {}
    assert problems({"kind": "postgres", "options": {"connection_string": DSN}}) == {}
    assert problems({"kind": "redis", "options": {"connection_string": "rediss://:pw@cache:6380/2"}}) == {}
    assert problems({"kind": "websocket", "url": "wss://feed.example/ws", "options": {"expect": "ok"}}) == {}


@pytest.mark.parametrize(
    ("data", "path", "starts"),
    [
        (
            {"kind": "dns", "host": "a.example", "options": {"expected": ["x"], "send": "x"}},
            "options.send",
            "'send' is not an option of a dns monitor",
        ),
        (
            {"kind": "redis", "options": {"connection_string": "redis:///0"}},
            "options.connection_string",
            "options.connection_string: must name a host",
        ),
        (
            {"kind": "websocket", "url": "ws://x.example/", "options": {"headers": {"X-Token": "a\nb"}}},
            "options.headers.X-Token",
            "options.headers.X-Token: a header value cannot hold line breaks",
        ),
        (
            {"kind": "websocket", "url": "ws://x.example/", "options": {"headers": {"X-Token": "***"}}},
            "options.headers.X-Token",
            "options.headers.X-Token: re-enter the value",
        ),
        (
            {"kind": "websocket", "url": "ws://x.example/", "options": {"expect_json": {}}},
            "options.expect_json",
            "options.expect_json: give at least one key",
        ),
        (
            {"kind": "dns", "host": "a.example", "timeout": 60, "interval": 60},
            "timeout",
            "timeout (60 s) must be shorter than interval (60 s)",
        ),
        (
            {"kind": "tcp", "host": "a.example", "port": 1, "options": {"count": 1}},
            "options",
            "a tcp monitor takes no options",
        ),
    ],
)
def test_bad_definitions_name_the_path(data: dict[str, Any], path: str, starts: str) -> None:
    found = problems(data)
    assert found.get(path, "").startswith(starts), found


def test_ping_follows_check_ping(ping_mode: Any) -> None:
    ping_mode("off")
    assert problems({"kind": "ping", "host": "192.0.2.1"}) == {
        "kind": "ping monitors are turned off on this server (CHECK_PING=off)"
    }
    ping_mode("auto")
    allowed, reason = ping.privileged_or_reason()
    assert problems({"kind": "ping", "host": "192.0.2.1"}) == (
        {} if allowed is not None else {"kind": reason}
    )


def test_secrets_are_masked_and_kept_when_sent_back() -> None:
    stored = {"connection_string": DSN}
    assert kinds.mask_options("postgres", stored) == {"connection_string": "***"}
    assert kinds.keep_secrets("postgres", stored, {"connection_string": "***"}) == stored
    assert kinds.keep_secrets("postgres", stored, {"connection_string": "postgres://new@h/db"}) == {
        "connection_string": "postgres://new@h/db"
    }
    headers = {"headers": {"Authorization": "Bearer t0ken", "X-A": "1"}, "send": "hi"}
    assert kinds.mask_options("websocket", headers) == {
        "headers": {"Authorization": "***", "X-A": "***"},
        "send": "hi",
    }
    sent = {"headers": {"Authorization": "***", "X-B": "2"}, "send": "hi"}
    # A header sent back as *** keeps its value; one left out is gone; a new one is taken.
    assert kinds.keep_secrets("websocket", headers, sent) == {
        "headers": {"Authorization": "Bearer t0ken", "X-B": "2"},
        "send": "hi",
    }
    assert kinds.keep_secrets("websocket", headers, {"headers": {"New": "***"}}) == {
        "headers": {"New": "***"}
    }
    secrets = kinds.secrets(stored)
    assert {"pw-s3cret", "q-s3cret", DSN} <= set(secrets)


def test_update_with_mask_keeps_the_stored_string_and_wire_shows_mask() -> None:
    current = normalise(
        with_defaults(
            {"name": "db", "kind": "postgres", "options": {"connection_string": DSN}}, timeout_max=60
        )
    )
    merged = merge_update(current, {"options": {"connection_string": "***"}, "interval": 30}, timeout_max=60)
    assert merged["options"] == {"connection_string": DSN}
    validate_definition(normalise(merged), min_interval=10, timeout_max=60)
    row = {
        **{
            k: None
            for k in (
                "id",
                "state_changed_at",
                "last_checked_at",
                "cert_expires_at",
                "cert_issuer",
                "created_at",
                "updated_at",
            )
        },
        **merged,
        "state": "up",
        "version": 1,
        "push_token": None,
        "last_latency_ms": None,
        "last_status_code": None,
        "last_error": None,
    }
    assert monitor_to_wire(row)["options"] == {"connection_string": "***"}
    exported = to_row(merged, "db", member_names={}, channel_names={}, timeout_max=60)
    assert exported["options"] == {"connection_string": "***"}
    assert "s3cret" not in repr(exported)


def test_changing_kind_drops_the_old_kinds_options() -> None:
    current = normalise(
        with_defaults(
            {"name": "db", "kind": "postgres", "options": {"connection_string": DSN}}, timeout_max=60
        )
    )
    merged = merge_update(current, {"kind": "tcp", "host": "db.internal", "port": 5432}, timeout_max=60)
    assert merged["options"] == {}
    validate_definition(normalise(merged), min_interval=10, timeout_max=60)


def test_header_values_stay_with_their_server() -> None:
    current = normalise(
        with_defaults(
            {
                "name": "feed",
                "kind": "websocket",
                "url": "wss://feed.example/ws",
                "options": {"headers": {"Authorization": "Bearer t0ken"}},
            },
            timeout_max=60,
        )
    )
    # Same server, another path: "***" keeps the stored value.
    same = merge_update(
        current,
        {"url": "wss://feed.example/v2", "options": {"headers": {"Authorization": "***"}}},
        timeout_max=60,
    )
    assert same["options"]["headers"] == {"Authorization": "Bearer t0ken"}
    # Another host, with or without options: the value must be given again.
    for patch in (
        {"url": "wss://elsewhere.example/ws", "options": {"headers": {"Authorization": "***"}}},
        {"url": "wss://elsewhere.example/ws"},
        {"url": "wss://feed.example:8443/ws"},
    ):
        moved = normalise(merge_update(current, patch, timeout_max=60))
        assert moved["options"]["headers"] == {"Authorization": "***"}, patch
        with pytest.raises(InvalidData) as refused:
            validate_definition(moved, min_interval=10, timeout_max=60)
        assert [e["path"] for e in refused.value.errors or []] == ["options.headers.Authorization"]
    given = merge_update(
        current,
        {"url": "wss://elsewhere.example/ws", "options": {"headers": {"Authorization": "Bearer other"}}},
        timeout_max=60,
    )
    assert given["options"]["headers"] == {"Authorization": "Bearer other"}
