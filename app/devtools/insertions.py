"""Layout-preserving insertions into ``app/protocol.py`` and ``actions.json``.

Pure text in, text out: the scaffold computes every new file content with these
functions before it writes anything, so a refusal never leaves a half-edited
tree. Each function re-parses its result and raises :class:`InsertionError` if
the edit did not produce exactly the intended change, so a surprising layout is
reported instead of silently corrupted.
"""

from __future__ import annotations

import ast
import json
import re

_PKGID_CLASS = "PkgID"
_MEMBER_LINE = re.compile(r"^(?P<indent>\s+)(?P<name>[A-Z][A-Z0-9_]*)\s*=\s*(?P<value>\d+)\s*$")
_WS_ENTRY_LINE = re.compile(r'^(?P<indent>\s*)"(?P<key>\d+)"\s*:\s*"(?P<role>[^"]*)"(?P<comma>,?)\s*$')


class InsertionError(ValueError):
    """The file's layout is not the one these edits understand; edit it by hand."""


def pkgid_members(protocol_source: str) -> dict[str, int]:
    """``PkgID`` member names and values, read from the source without importing it."""
    tree = ast.parse(protocol_source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == _PKGID_CLASS:
            members: dict[str, int] = {}
            for stmt in node.body:
                if (
                    isinstance(stmt, ast.Assign)
                    and len(stmt.targets) == 1
                    and isinstance(stmt.targets[0], ast.Name)
                    and isinstance(stmt.value, ast.Constant)
                    and type(stmt.value.value) is int
                ):
                    members[stmt.targets[0].id] = stmt.value.value
            return members
    raise InsertionError(f"no class {_PKGID_CLASS} found in app/protocol.py")


def insert_pkgid_member(protocol_source: str, name: str, value: int) -> str:
    """Return ``protocol_source`` with ``NAME = value`` added to ``PkgID`` in numeric order.

    Members are grouped by hundred-block (the package-id blocks of docs/protocol.md) with a blank line
    between groups: the new member joins its block's group, or starts a new group
    in the right place when its block has no members yet.
    """
    tree = ast.parse(protocol_source)
    cls = next(
        (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == _PKGID_CLASS),
        None,
    )
    if cls is None or cls.end_lineno is None:
        raise InsertionError(f"no class {_PKGID_CLASS} found in app/protocol.py")
    lines = protocol_source.splitlines(keepends=True)
    # (line index, value) of every member line inside the class body.
    found: list[tuple[int, int, str]] = []
    for idx in range(cls.lineno, cls.end_lineno):
        match = _MEMBER_LINE.match(lines[idx].rstrip("\n"))
        if match:
            found.append((idx, int(match["value"]), match["indent"]))
    if not found:
        raise InsertionError(f"class {_PKGID_CLASS} has no `NAME = <int>` member lines to align with")
    indent = found[0][2]
    new_line = f"{indent}{name} = {value}\n"
    before = [f for f in found if f[1] < value]
    after = [f for f in found if f[1] > value]
    block = value // 100
    if before and before[-1][1] // 100 == block:
        at, insert = before[-1][0] + 1, [new_line]
    elif after and after[0][1] // 100 == block:
        at, insert = after[0][0], [new_line]
    elif before:
        at, insert = before[-1][0] + 1, ["\n", new_line]
    else:
        at, insert = after[0][0], [new_line, "\n"]
    result = "".join(lines[:at] + insert + lines[at:])
    expected = dict(pkgid_members(protocol_source))
    expected[name] = value
    if pkgid_members(result) != expected:
        raise InsertionError("inserting the PkgID member did not produce the expected enum; edit it by hand")
    return result


def insert_ws_role(actions_text: str, pkg_id: int, role: str) -> str:
    """Return ``actions.json`` text with ``"pkg_id": "role"`` added to ``"ws"`` in numeric order.

    The entry copies the indentation of its neighbours and the rest of the file
    is left byte-identical (apart from a comma when the entry becomes the last).
    """
    lines = actions_text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r'^\s*"ws"\s*:\s*\{\s*$', line)), None)
    if start is None:
        raise InsertionError('actions.json: expected a line `"ws": {` opening a one-entry-per-line object')
    entries: list[tuple[int, int, str, str]] = []
    end = None
    for idx in range(start + 1, len(lines)):
        match = _WS_ENTRY_LINE.match(lines[idx].rstrip("\n"))
        if match:
            entries.append((idx, int(match["key"]), match["indent"], match["comma"]))
            continue
        if re.match(r"^\s*\}", lines[idx]):
            end = idx
            break
        raise InsertionError(f'actions.json line {idx + 1}: expected `"<id>": "<role>",` inside "ws"')
    if end is None or not entries:
        raise InsertionError('actions.json: the "ws" object is empty or not closed; add the entry by hand')
    indent = entries[0][2]
    after = [e for e in entries if e[1] > pkg_id]
    if after:
        at = after[0][0]
        insert = f'{indent}"{pkg_id}": "{role}",\n'
        new_lines = [*lines[:at], insert, *lines[at:]]
    else:
        last = entries[-1][0]
        new_lines = list(lines)
        new_lines[last] = new_lines[last].rstrip("\n").rstrip() + ",\n"
        new_lines.insert(last + 1, f'{indent}"{pkg_id}": "{role}"\n')
    result = "".join(new_lines)
    before_obj = json.loads(actions_text)
    expected = dict(before_obj)
    expected["ws"] = {**before_obj["ws"], str(pkg_id): role}
    try:
        parsed = json.loads(result)
    except ValueError:
        raise InsertionError("actions.json would no longer parse; add the entry by hand") from None
    if parsed != expected:
        raise InsertionError("inserting into actions.json did not produce the expected object")
    return result
