"""Schema error reports whose cost does not grow with the rejected data.

jsonschema's stock validator walks every item of an oversized array before it
reports the size (``items`` comes first in our schemas), formats every message
with the instance's ``repr`` and, asked for all errors, finds all of them: a
64 KiB SUBSCRIBE holding 30,000 zeros cost ~420 ms to reject. Here:

- once an array, object or string exceeds its schema's ``maxItems`` /
  ``maxProperties`` / ``maxLength``, only the size (and type) keywords look at
  it: nothing walks or compares the oversized content;
- messages describe an instance ("an array of 30000 items", the first 40
  characters of a string) instead of printing it, and are capped in length;
- the caller takes the first :data:`MAX_ERRORS` errors of a lazy iteration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema._utils import equal, find_additional_properties
from jsonschema.exceptions import ValidationError

#: Errors reported per rejected request (the first is usually the one to fix).
MAX_ERRORS = 5
#: Characters of one error message; of a client string quoted in one.
MAX_MESSAGE = 240
_SHOWN = 40
#: Extra property names listed in an additionalProperties error.
_EXTRAS_SHOWN = 3

Keyword = Callable[[Any, Any, Any, dict[str, Any]], Iterator[ValidationError] | None]

#: Keywords that still judge an instance larger than its schema's bound: the size
#: keyword says what is wrong; every other keyword would walk the oversized content.
_SIZE_KEYWORDS = frozenset({"type", "maxItems", "maxProperties", "maxLength", "minItems", "minProperties"})


def describe(instance: Any) -> str:
    """A short, safe rendering of a client value for a message."""
    if instance is None:
        return "null"
    if instance is True or instance is False:
        return "true" if instance else "false"
    if isinstance(instance, int | float):
        text = repr(instance)
        return text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    if isinstance(instance, str):
        shown = instance[:_SHOWN].encode("unicode_escape").decode("ascii").replace("'", "\\'")
        more = f"... ({len(instance)} characters)" if len(instance) > _SHOWN else ""
        return f"'{shown}'{more}"
    if isinstance(instance, list):
        return f"an array of {len(instance)} item{'' if len(instance) == 1 else 's'}"
    if isinstance(instance, dict):
        return f"an object with {len(instance)} key{'' if len(instance) == 1 else 's'}"
    return type(instance).__name__


def _oversized(validator: Any, instance: Any, schema: dict[str, Any]) -> bool:
    if isinstance(instance, list):
        bound = schema.get("maxItems")
    elif isinstance(instance, dict):
        bound = schema.get("maxProperties")
    elif isinstance(instance, str):
        bound = schema.get("maxLength")
    else:
        return False
    return isinstance(bound, int) and len(instance) > bound


def _guarded(keyword: Keyword) -> Keyword:
    def check(validator: Any, value: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if _oversized(validator, instance, schema):
            return
        yield from keyword(validator, value, instance, schema) or ()

    return check


def _type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    names = [types] if isinstance(types, str) else list(types)
    if not any(validator.is_type(instance, name) for name in names):
        yield ValidationError(f"{describe(instance)} is not of type {' or '.join(repr(n) for n in names)}")


def _enum(validator: Any, enums: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if all(not equal(each, instance) for each in enums):
        shown = ", ".join(describe(each) for each in list(enums)[:10])
        yield ValidationError(f"{describe(instance)} is not one of {shown}")


def _const(validator: Any, const: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    if not equal(instance, const):
        yield ValidationError(f"{describe(const)} was expected")


def _size(kind: str, bigger: bool) -> Keyword:
    """maxItems/minItems/maxProperties/minProperties/maxLength/minLength, without a repr."""
    unit = {"array": "items", "object": "keys", "string": "characters"}[kind]

    def check(validator: Any, bound: Any, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
        if not validator.is_type(instance, kind):
            return
        size = len(instance)
        if (size > bound) if bigger else (size < bound):
            limit = "at most" if bigger else "at least"
            yield ValidationError(f"has {size} {unit}; {limit} {bound} allowed")

    return check


def _additional_properties(
    validator: Any, allowed: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = find_additional_properties(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed:
        shown = [describe(name) for name in islice(extras, _EXTRAS_SHOWN)]
        if not shown:
            return
        rest = sum(1 for _ in extras)
        names = ", ".join(shown) + (f" and {rest} more" if rest else "")
        verb = "was" if len(shown) == 1 and not rest else "were"
        yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


def _one_of(
    validator: Any, subschemas: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    options = list(subschemas)
    context: list[ValidationError] = []
    for index, sub in enumerate(options):
        errors = list(islice(validator.descend(instance, sub, schema_path=index), MAX_ERRORS))
        if not errors:
            break
        context.extend(errors)
    else:
        # The error deepest in the data comes from the form the client was closest to.
        closest = max(context, key=lambda e: len(e.absolute_path), default=None)
        hint = ""
        if closest is not None:
            where = ".".join(_path_part(p) for p in closest.absolute_path)
            hint = f" (closest: {where + ': ' if where else ''}{closest.message})"
        yield ValidationError(
            f"{describe(instance)} is not valid under any of the given schemas{hint}", context=context
        )
        return
    if any(validator.evolve(schema=sub).is_valid(instance) for sub in options[index + 1 :]):
        yield ValidationError(f"{describe(instance)} is valid under more than one of the given schemas")


_REPLACED: dict[str, Keyword] = {
    "oneOf": _one_of,
    "type": _type,
    "enum": _enum,
    "const": _const,
    "maxItems": _size("array", True),
    "minItems": _size("array", False),
    "maxProperties": _size("object", True),
    "minProperties": _size("object", False),
    "maxLength": _size("string", True),
    "minLength": _size("string", False),
    "additionalProperties": _additional_properties,
}

BoundedValidator = validators.extend(
    Draft202012Validator,
    {
        name: (_REPLACED.get(name, fn) if name in _SIZE_KEYWORDS else _guarded(_REPLACED.get(name, fn)))
        for name, fn in Draft202012Validator.VALIDATORS.items()
    },
)


def schema_errors(validator: Any, data: Any) -> list[dict[str, str]]:
    """Up to :data:`MAX_ERRORS` ``{"path", "msg"}`` for ``data``; [] if valid."""
    out = []
    # Sorted like before (shallow paths first), but only the few errors collected.
    first = sorted(
        islice(validator.iter_errors(data), MAX_ERRORS), key=lambda e: [str(p) for p in e.absolute_path]
    )
    for err in first:
        path = ".".join(_path_part(p) for p in err.absolute_path)
        message = err.message if len(err.message) <= MAX_MESSAGE else err.message[:MAX_MESSAGE] + "..."
        if err.validator in ("additionalProperties", "required"):
            msg = f"{path}: {message}" if path else message
        else:
            msg = f"{path or 'data'}: {message}"
        out.append({"path": path, "msg": msg})
    return out


def _path_part(part: Any) -> str:
    if isinstance(part, str):
        return part[:_SHOWN].encode("unicode_escape").decode("ascii")
    return str(part)
