"""Every registered package schema bounds its arrays, strings, maps and numbers.

Rejecting data costs work proportional to what the schema lets through before
it says no; a bound on every array (``maxItems``), every string (``maxLength``,
unless an ``enum``/``const`` fixes the value) and every open-ended map
(``maxProperties``) keeps that work small whatever the client sends; every
number has a ``maximum``, so nothing the database or a statistic cannot hold
gets past the schema. A new
package without bounds fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from app.handlers import build_router
from app.settings import Settings


def _nodes(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key, value in schema.items():
        if key in ("properties", "patternProperties", "$defs"):
            for name, sub in value.items():
                yield from _nodes(sub, f"{path}.{name}")
        elif key in ("items", "additionalProperties", "propertyNames", "contains", "not"):
            yield from _nodes(value, f"{path}.<{key}>")
        elif key in ("oneOf", "anyOf", "allOf", "prefixItems"):
            for i, sub in enumerate(value):
                yield from _nodes(sub, f"{path}.<{key}[{i}]>")


def _types(schema: dict[str, Any]) -> set[str]:
    kind = schema.get("type")
    return {kind} if isinstance(kind, str) else set(kind or ())


def unbounded(schema: dict[str, Any], root: str) -> list[str]:
    problems = []
    for path, node in _nodes(schema, root):
        types = _types(node)
        if "array" in types and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        if "string" in types and "maxLength" not in node and "enum" not in node and "const" not in node:
            problems.append(f"{path}: string without maxLength")
        if types & {"integer", "number"} and "maximum" not in node and "enum" not in node:
            problems.append(f"{path}: number without maximum")
        open_map = "object" in types and isinstance(node.get("additionalProperties"), dict)
        if open_map and "maxProperties" not in node:
            problems.append(f"{path}: open map without maxProperties")
    return problems


def test_every_package_schema_bounds_arrays_strings_and_maps() -> None:
    problems: list[str] = []
    specs = build_router().specs
    assert len(specs) > 40  # the walk really sees the registered packages
    for spec in specs.values():
        if spec.schema:
            problems += unbounded(spec.schema, spec.name)
    assert problems == []


def test_the_walk_finds_nested_gaps() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "array", "maxItems": 3, "items": {"type": ["string", "null"]}},
            "b": {"oneOf": [{"type": "array", "items": {"enum": ["x"]}}]},
            "c": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    }
    assert unbounded(schema, "T") == [
        "T.a.<items>: string without maxLength",
        "T.b.<oneOf[0]>: array without maxItems",
        "T.c: open map without maxProperties",
        "T.c.<additionalProperties>: number without maximum",
    ]


def test_topic_lists_match_the_topic_limit() -> None:
    specs = {spec.name: spec for spec in build_router().specs.values()}
    limit = Settings().ws_max_topics
    for name in ("SUBSCRIBE", "UNSUBSCRIBE"):
        schema = specs[name].schema
        assert schema is not None
        assert schema["properties"]["topics"]["maxItems"] == limit
    assert specs["SUBSCRIBE"].schema["properties"]["since"]["maxProperties"] == limit  # type: ignore[index]
