"""Render JSON data as Python source that ``ruff format`` leaves unchanged.

Every non-empty dict and list is written one item per line with a trailing
comma (ruff's "magic trailing comma" keeps such literals expanded), strings as
double-quoted JSON strings, ``true/false/null`` as ``True/False/None``.
"""

from __future__ import annotations

import json
from typing import Any

_INDENT = "    "


def pyliteral(value: Any, level: int = 0) -> str:
    """Python source for ``value`` (JSON types only), continuation lines indented from ``level``."""
    inner = _INDENT * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{_string(str(k))}: {pyliteral(v, level + 1)},\n" for k, v in value.items()]
        return "{\n" + "".join(items) + _INDENT * level + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{inner}{pyliteral(v, level + 1)},\n" for v in value]
        return "[\n" + "".join(items) + _INDENT * level + "]"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if value is None:
        return "None"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, int | float):
        return repr(value)
    raise TypeError(f"cannot render {type(value).__name__} as a JSON-like Python literal")


def _string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)
