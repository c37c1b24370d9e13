"""The router's two-step schema check never lets through what jsonschema rejects.

``SchemaCheck`` accepts on fastjsonschema's word and asks jsonschema only when
fastjsonschema rejects. That is safe only if fastjsonschema is never looser
than jsonschema (draft 2020-12) on our schemas. For every registered package
schema this generates valid data and many near misses (wrong types, bools for
integers, 1.0 for integers, boundary lengths and numbers, missing and extra
keys, newlines against patterns) and checks: fast accepts => jsonschema accepts;
and that valid data really takes the fast path.
"""

from __future__ import annotations

import random
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from app.handlers import build_router
from app.routing import SchemaCheck

ROUTER = build_router()
SPECS = [spec for spec in ROUTER.specs.values() if spec.schema and spec.validator is not None]

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    1.0,
    1.5,
    2**63,
    -(2**63) - 1,
    "",
    "x",
    "1",
    "a\nb",
    "ü" * 3,
    [],
    [1],
    ["a"],
    {},
    {"a": 1},
    float("inf"),
]


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return kind
    if kind is not None:
        return [kind]
    if "enum" in schema:
        return ["enum"]
    if "oneOf" in schema:
        return ["oneOf"]
    return ["any"]


def sample(schema: dict[str, Any], rng: random.Random, depth: int = 0) -> Any:
    """A value that is usually valid for ``schema`` and sometimes just outside it."""
    if rng.random() < 0.12 or depth > 4:
        return rng.choice(ODD_VALUES)
    kind = rng.choice(_types(schema))
    if kind == "enum":
        return rng.choice(schema["enum"])
    if kind == "oneOf":
        return sample(rng.choice(schema["oneOf"]), rng, depth + 1)
    if kind == "null":
        return None
    if kind == "boolean":
        return rng.choice([True, False])
    if kind in ("integer", "number"):
        low = schema.get("minimum", -1000)
        high = schema.get("maximum", low + 1000)
        value = rng.choice([low, high, low - 1, high + 1, rng.randint(int(low), int(high))])
        if kind == "number" and rng.random() < 0.3:
            return value + 0.5
        return float(value) if rng.random() < 0.1 else value
    if kind == "string":
        low = schema.get("minLength", 0)
        high = min(schema.get("maxLength", 40), 300)
        length = rng.choice([low, high, max(0, low - 1), high + 1, rng.randint(low, high)])
        alphabet = rng.choice(["abc-09", "ABC.:[]", "a\n", "é漢", "  "])
        if "enum" in schema:
            return rng.choice(schema["enum"])
        return "".join(rng.choice(alphabet) for _ in range(length))
    if kind == "array":
        items = schema.get("items", {})
        count = rng.choice([0, 1, 2, schema.get("maxItems", 3), schema.get("maxItems", 3) + 1])
        out = [sample(items, rng, depth + 1) for _ in range(min(count, 60))]
        if schema.get("uniqueItems") and out and rng.random() < 0.3:
            out.append(out[0])
        return out
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        out_obj: dict[str, Any] = {}
        for name in schema.get("required", []):
            if rng.random() > 0.05:
                out_obj[name] = sample(props.get(name, {}), rng, depth + 1)
        # Wide schemas (a monitor definition has ~40 fields) would almost never yield an
        # all-valid sample at one in two per field: aim at about four optional fields.
        chance = min(0.5, 4 / max(len(props), 1))
        for name, sub in props.items():
            if rng.random() < chance:
                out_obj[name] = sample(sub, rng, depth + 1)
        if rng.random() < 0.1:
            out_obj[rng.choice(["extra", "Bad Key", "x" * 70])] = "v"
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and rng.random() < 0.5:
            out_obj[rng.choice(["X-Key", "bad key", "k"])] = sample(extra, rng, depth + 1)
        return out_obj
    return rng.choice(ODD_VALUES)


def test_every_package_schema_is_checked() -> None:
    # The suite below is only meaningful if it sees the schemas.
    assert len(SPECS) >= 30


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_fast_path_is_never_looser_than_jsonschema(spec: Any) -> None:
    rng = random.Random(spec.pkg_id)
    judge = Draft202012Validator(spec.schema)
    fast = fastjsonschema.compile(spec.schema, use_default=False)
    fast_accepted = near_misses = 0
    # At least 400 samples; schemas with many optional fields (each sometimes just outside
    # its range) need more draws before one is valid throughout, so go on until both kinds
    # were seen (bounded).
    for i in range(4000):
        if i >= 400 and fast_accepted and near_misses:
            break
        data = sample(spec.schema, rng)
        near_misses += not judge.is_valid(data)
        try:
            fast(data)
        except fastjsonschema.JsonSchemaException:
            continue
        fast_accepted += 1
        assert judge.is_valid(data), f"{spec.name}: fastjsonschema accepted {data!r}, jsonschema rejects it"
    assert fast_accepted > 0, f"{spec.name}: no generated sample took the fast path"
    assert near_misses > 0, f"{spec.name}: no generated sample was invalid, so nothing was tested"


def test_schema_check_keeps_jsonschema_errors_and_does_not_touch_data() -> None:
    check = SchemaCheck(
        {
            "type": "object",
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "page": {"type": "integer", "default": 1},
            },
            "required": ["id"],
            "additionalProperties": False,
        }
    )
    data: dict[str, Any] = {"id": 3}
    assert check.errors(data) == []
    assert data == {"id": 3}, "validation must not fill in defaults"
    errors = check.errors({"id": 0, "nope": 1})
    assert [e["path"] for e in errors] == ["", "id"]
    assert "Additional properties are not allowed" in errors[0]["msg"]
    # 1.0 is an integer for draft 2020-12: fastjsonschema's rejection is overruled.
    assert check.errors({"id": 1.0}) == []


def _integer_schemas(schema: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(schema, dict):
        kinds = schema.get("type")
        if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
            found.append((path, schema))
        for key, value in schema.items():
            found += _integer_schemas(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += _integer_schemas(value, f"{path}[{index}]")
    return found


def test_every_integer_in_every_schema_fits_the_database() -> None:
    """An unbounded integer reaches PostgreSQL and fails there as an internal error
    (asyncpg cannot encode 2**70 as int4/int8); bounded, it is INVALID_DATA up front."""
    unbounded = [
        f"{spec.name}{path}"
        for spec in SPECS
        for path, schema in _integer_schemas(spec.schema, "")
        if not isinstance(schema.get("maximum"), int) or schema["maximum"] > 2**63 - 1
    ]
    assert unbounded == []
