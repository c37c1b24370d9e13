"""``make ws-docs``: write ``docs/packages.md``, the protocol reference, from the registry.

It also regenerates the clients' wire constants (:mod:`app.devtools.client_constants`).

    python -m app.devtools.protocol_docs [--check] [--output docs/packages.md]

Every registered package gets its id, name, least role, handler, request
schema, response shape and an example exchange. Sources, so the reference
cannot drift from the code:

- summary: the first line of the handler's docstring;
- request schema: the ``schema=`` given to ``@router.package``;
- response shape and example: ``response_example=`` of ``@router.package``
  (the shape is the example's JSON types); ``meta`` is noted when the handler
  returns a ``Page``;
- request example: built from the schema (``examples``/``default``/``enum``
  first, then a placeholder per type) for the required keys and those with a
  default;
- role: actions.json (``ws`` for packages, ``topics`` for topics).

The output is deterministic (sorted by id, stable JSON), so
``tests/unit/test_ws_docs.py`` can compare the committed file with a fresh render.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from app.devtools import client_constants
from app.devtools.registry_report import PackageInfo, Report, collect
from app.protocol import PROTOCOL_VERSION, SUBPROTOCOL, RSPCode
from app.rbac import PROBE

ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "docs" / "packages.md"
#: Fixed so the reference is byte-stable between runs.
EXAMPLE_REQ_ID = "3f0c7a8e-3c1b-4a47-9d0e-0d5d0c3b9a11"

_FORMAT_EXAMPLES = {
    "date-time": "2026-11-22T10:00:00Z",
    "email": "ops@example.com",
    "uri": "https://example.com/health",
    "hostname": "db.internal",
}
_TYPE_EXAMPLES: dict[str, Any] = {
    "string": "string",
    "integer": 1,
    "number": 1.5,
    "boolean": True,
    "null": None,
}


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _block(value: Any, level: int = 0, width: int = 100) -> str:
    """JSON that stays on one line where it fits in ``width`` and opens up only where it does not."""
    one_line = _json(value)
    pad = "  " * level
    if len(pad) + len(one_line) <= width or not isinstance(value, dict | list) or not value:
        return one_line
    inner = "  " * (level + 1)
    if isinstance(value, dict):
        items = [
            f"{inner}{_json(str(k))}: {_block(v, level + 1, width - len(_json(str(k))) - 2)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    items = [f"{inner}{_block(v, level + 1, width)}" for v in value]
    return "[\n" + ",\n".join(items) + "\n" + pad + "]"


def example_from_schema(schema: dict[str, Any] | None, name: str = "") -> Any:
    """A request ``data`` value for ``schema``: required keys and keys with a default.

    ``name`` is the property being filled in; strings use it as their placeholder
    (``"push_token"``), and ``*_at`` names get a timestamp.
    """
    if not schema:
        return {}
    for key in ("const", "examples", "default", "enum"):
        if key in schema:
            value = schema[key]
            return value[0] if key in ("examples", "enum") and isinstance(value, list) and value else value
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return example_from_schema(schema[key][0], name)
    kind = schema.get("type", "object" if "properties" in schema else None)
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        required = set(schema.get("required", []))
        return {
            key: example_from_schema(sub, key)
            for key, sub in props.items()
            if key in required or "default" in sub or "examples" in sub
        }
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1)))
        return [example_from_schema(items, name) for _ in range(count)] if isinstance(items, dict) else []
    if kind == "string":
        if schema.get("format") in _FORMAT_EXAMPLES:
            return _FORMAT_EXAMPLES[schema["format"]]
        if name.endswith("_at"):
            return _FORMAT_EXAMPLES["date-time"]
        text = (name or "string").ljust(int(schema.get("minLength", 0)), "x")
        return text[: int(schema["maxLength"])] if "maxLength" in schema else text
    if kind in ("integer", "number") and "minimum" in schema:
        return schema["minimum"]
    return _TYPE_EXAMPLES.get(str(kind), "value")


def _valid(schema: dict[str, Any] | None, value: Any) -> bool:
    from jsonschema import Draft202012Validator

    return not schema or Draft202012Validator(schema).is_valid(value)


def shape_of(value: Any) -> Any:
    """The JSON types of an example value: ``{"id": "integer", "tags": ["string"]}``."""
    if isinstance(value, dict):
        return {k: shape_of(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape_of(value[0])] if value else []
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"


def _anchor(p: PackageInfo) -> str:
    # GitHub's heading slug: lower case, spaces to hyphens, underscores kept.
    return f"{p.pkg_id}-{p.name.lower()}"


def _package_section(p: PackageInfo) -> list[str]:
    out = [f"### {p.pkg_id} {p.name}", ""]
    out += [p.summary or "_No summary: give the handler a docstring._", ""]
    if p.role == PROBE:
        role_line = "- role: `probe` only (a probe token; no other role may call it)"
    elif p.role:
        role_line = f"- role: `{p.role}` or higher"
    else:
        role_line = "- role: **missing in actions.json** (the server refuses to start)"
    out += [
        role_line,
        f"- handler: `{p.handler}`",
        f"- audited: {'yes' if p.audit else 'no'}",
        "",
        "Request `data` schema:",
        "",
        "```json",
        _block(p.schema if p.schema else {"type": "object"}),
        "```",
        "",
    ]
    if p.response_example is None:
        out += ["Response: _not documented; add `response_example=` to `@router.package`._", ""]
        return out
    out += [
        "Response `data` shape"
        + (" (with `meta`: pagination, see [protocol.md](protocol.md#response)):" if p.paginated else ":"),
        "",
    ]
    out += ["```json", _block(shape_of(p.response_example)), "```", ""]
    request = {"pkg_id": p.pkg_id, "req_id": EXAMPLE_REQ_ID, "data": example_from_schema(p.schema)}
    response: dict[str, Any] = {
        "pkg_id": p.pkg_id,
        "req_id": EXAMPLE_REQ_ID,
        "status_code": 0,
        "data": p.response_example,
    }
    if p.paginated:
        response["meta"] = {"page": 1, "per_page": 20, "total": 1, "pages": 1}
    out += [
        "Example (→ request, ← response):",
        "",
        "```",
        "→ " + _json(request),
        "← " + _json(response),
        "```",
        "",
    ]
    return out


def render(report: Report) -> str:
    """The whole reference as Markdown text."""
    out = [
        f"# Watchpost protocol reference (v{PROTOCOL_VERSION})",
        "",
        "<!-- Generated by `make ws-docs` (app/devtools/protocol_docs.py) from the handler registry, "
        "actions.json and app/protocol.py. Do not edit by hand: tests/unit/test_ws_docs.py fails when this "
        "file differs from a fresh generation. -->",
        "",
        f"One WebSocket endpoint, `/web`, subprotocol `{SUBPROTOCOL}`. A request is "
        '`{"pkg_id", "req_id", "data"}`; its one response is '
        '`{"pkg_id", "req_id", "status_code", "data"}` plus `meta` for paginated lists '
        "([protocol.md](protocol.md#response)). "
        "The role is the least role that may call the package (actions.json); "
        "higher roles may too.",
        "",
        "Add a package with `make new-ws-handlers`, list the registry with `make ws-handlers`, "
        "and regenerate this file with `make ws-docs`.",
        "",
        "## Packages",
        "",
        "| id | name | role | summary |",
        "|---:|---|---|---|",
    ]
    for p in report.packages:
        summary = p.summary.replace("|", "\\|")
        out.append(f"| {p.pkg_id} | [{p.name}](#{_anchor(p)}) | {p.role or '**missing**'} | {summary} |")
    out.append("")
    for p in report.packages:
        out += _package_section(p)
    out += ["## Status codes", "", "| code | name |", "|---:|---|"]
    out += [f"| {int(code)} | {code.name} |" for code in RSPCode]
    out.append("")
    if report.events:
        out += [
            "## Events (server to client)",
            "",
            "Never requested; delivered to subscribers of a topic.",
            "",
        ]
        out += ["| id | name |", "|---:|---|"]
        out += [f"| {e.pkg_id} | {e.name} |" for e in report.events]
        out.append("")
    if report.topics:
        out += [
            "## Topics",
            "",
            "Tenant-relative names for SUBSCRIBE; `{id}` stands for an object id (a positive integer of "
            "up to 19 digits, no leading zero). The role is the least role that may read the topic "
            "(actions.json `topics`); higher roles may too.",
            "",
            "| topic | role |",
            "|---|---|",
        ]
        out += [f"| `{name}` | {role} |" for name, role in report.topics.items()]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make ws-docs",
        description="Write the protocol reference and the clients' generated wire constants.",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: docs/packages.md")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    try:
        targets = {
            args.output: render(collect()),
            **client_constants.outputs(client_constants.JS_OUTPUT.read_text()),
        }
    except client_constants.GeneratedBlockMissing as exc:
        print(exc, file=sys.stderr)
        return 1
    stale = 0
    for path, text in targets.items():
        current = path.read_text() if path.exists() else None
        if current == text:
            if not args.check:
                print(f"{path} is up to date")
        elif args.check:
            print(f"{path} is stale: run `make ws-docs` and commit it", file=sys.stderr)
            stale += 1
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
