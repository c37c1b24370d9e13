"""The generated protocol reference (docs/packages.md) and the handler table (make ws-handlers)."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator

from app.devtools import handlers_table, protocol_docs
from app.devtools.registry_report import FIRST_EVENT_ID, collect
from app.handlers import build_router
from app.protocol import PkgID

ROOT = Path(__file__).resolve().parents[2]


def test_committed_reference_matches_a_fresh_generation() -> None:
    committed = (ROOT / "docs" / "packages.md").read_text()
    fresh = protocol_docs.render(collect())
    assert committed == fresh, "docs/packages.md is stale: run `make ws-docs` and commit the result"


def test_reference_documents_every_registered_package_with_its_role() -> None:
    text = protocol_docs.render(collect())
    actions = json.loads((ROOT / "actions.json").read_text())["ws"]
    for pkg_id, spec in build_router().specs.items():
        assert f"\n### {pkg_id} {spec.name}\n" in text
        section = text.split(f"\n### {pkg_id} {spec.name}\n", 1)[1].split("\n### ", 1)[0]
        role = actions[str(pkg_id)]
        if role == "probe":  # outside the ladder: no role above it may call it
            assert "- role: `probe` only" in section
        else:
            assert f"- role: `{role}` or higher" in section


def test_request_examples_come_from_the_schema_and_satisfy_it() -> None:
    schema = {
        "type": "object",
        "properties": {
            "push_token": {"type": "string", "minLength": 12, "maxLength": 64},
            "starts_at": {"type": "string", "minLength": 10},
            "kind": {"enum": ["http", "tcp"]},
            "ids": {"type": "array", "minItems": 2, "items": {"type": "integer", "minimum": 1}},
            "page": {"type": "integer", "default": 1},
            "note": {"type": "string"},
        },
        "required": ["push_token", "starts_at", "kind", "ids"],
        "additionalProperties": False,
    }
    example = protocol_docs.example_from_schema(schema)
    assert example == {
        "push_token": "push_tokenxx",
        "starts_at": "2026-11-22T10:00:00Z",
        "kind": "http",
        "ids": [1, 1],
        "page": 1,
    }
    assert Draft202012Validator(schema).is_valid(example)
    assert protocol_docs.shape_of({"id": 1, "ok": True, "tags": ["a"], "at": None, "ms": 1.5}) == {
        "id": "integer",
        "ok": "boolean",
        "tags": ["string"],
        "at": "null",
        "ms": "number",
    }


def test_table_lists_every_handler_and_keeps_events_apart() -> None:
    report = collect()
    text = handlers_table.render(report)
    for spec in build_router().specs.values():
        handler = f"{spec.handler.__module__}:{spec.handler.__qualname__}"
        assert any(line.split()[:3] == [str(spec.pkg_id), spec.name, handler] for line in text.splitlines())
    event_ids = {int(m) for m in PkgID if m >= FIRST_EVENT_ID}
    assert event_ids <= {e.pkg_id for e in report.events}
    assert not event_ids & {pid for pid, _ in report.roles_without_handler}
    events_part = text.split("Events (server to client, not handlers):", 1)[1]
    assert "904  EVENT_AUTH_EXPIRING" in events_part


def test_table_flags_actions_without_handler_and_handlers_without_actions(tmp_path: Path) -> None:
    raw = json.loads((ROOT / "actions.json").read_text())
    del raw["ws"]["1"]  # PING is registered: now it has a handler but no role
    raw["ws"]["555"] = "viewer"  # nothing registers 555
    raw["ws"]["905"] = "viewer"  # an event id: listed with the events, never as a missing handler
    actions = tmp_path / "actions.json"
    actions.write_text(json.dumps(raw))
    report = collect(actions)
    assert not report.consistent
    assert (555, "viewer") in report.roles_without_handler
    assert 1 in report.handlers_without_role
    assert 905 in {e.pkg_id for e in report.events}
    assert 905 not in {pid for pid, _ in report.roles_without_handler}
    text = handlers_table.render(report)
    assert any(
        line.split()[:4] == ["1", "PING", "app.handlers.system:ping", "MISSING"] for line in text.splitlines()
    )
    missing_handler = text.split("In actions.json but no handler registered", 1)[1].split("\n\n", 1)[0]
    assert " 555  ?" in missing_handler
    missing_role = text.split("no actions.json 'ws' entry", 1)[1].split("\n\n", 1)[0]
    assert "   1  PING" in missing_role


def test_reference_lists_every_topic_with_its_role_from_actions_json() -> None:
    text = protocol_docs.render(collect())
    section = text.split("\n## Topics\n", 1)[1]
    topics = json.loads((ROOT / "actions.json").read_text())["topics"]
    assert topics
    for name, role in topics.items():
        assert f"\n| `{name}` | {role} |" in section, name
