"""Which package ids are taken, and which one a new package gets.

Read from the source text of ``app/protocol.py`` and ``actions.json`` (never by
importing the app, so a half-finished tree can still be scaffolded into).

The default ``pkg_id`` of a new package is the next free id, searched upward
from a start point within one hundred-block of docs/protocol.md ("Package ids"), first match wins:

1. the module exists: after the highest id its handlers register;
2. the name's first word names an existing family (``token_rotate`` → after
   the highest ``TOKEN_*`` id);
3. the module or the name's first word is a package-id block keyword (docs/protocol.md)
   (``groups`` → 600-699, see :data:`RANGE_KEYWORDS`): from the block start;
4. otherwise pass ``pkg_id`` explicitly.

If the rest of the block above the start is taken, the lowest free id of the block is used.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from app.devtools import insertions

MIN_ID, MAX_ID = 1, 899

#: Package-id blocks (docs/protocol.md, "Package ids") by the words that name them.
RANGE_KEYWORDS: dict[int, tuple[str, ...]] = {
    0: ("session", "system"),
    100: ("monitor", "monitors"),
    200: ("check", "checks", "heartbeat", "heartbeats", "stats", "statistics", "status"),
    300: ("incident", "incidents"),
    400: ("alert", "alerts", "channel", "channels", "delivery", "deliveries", "alerting"),
    500: ("maintenance", "maintenances"),
    600: ("page", "pages", "status_pages", "group", "groups", "probe", "probes", "location", "locations"),
    700: ("tenant", "tenants", "member", "members", "user", "users", "token", "tokens"),
    800: ("audit",),
}


@dataclass(frozen=True)
class Tree:
    """What the scaffold needs to know about a source tree, read once (no imports)."""

    root: Path
    protocol: str
    actions: str
    members: dict[str, int]
    ws: dict[int, str]
    roles: list[str]

    @classmethod
    def read(cls, root: Path) -> Tree:
        protocol = (root / "app" / "protocol.py").read_text()
        actions = (root / "actions.json").read_text()
        raw = json.loads(actions)
        return cls(
            root=root,
            protocol=protocol,
            actions=actions,
            members=insertions.pkgid_members(protocol),
            ws={int(k): v for k, v in raw.get("ws", {}).items()},
            roles=list(raw.get("roles", [])),
        )

    def taken(self) -> set[int]:
        return set(self.members.values()) | set(self.ws)

    def module_path(self, module: str) -> Path:
        return self.root / "app" / "handlers" / f"{module}.py"


def module_ids(tree: Tree, module: str) -> list[int]:
    """Package ids a handler module registers, read from its ``PkgID.X`` references."""
    path = tree.module_path(module)
    if not path.exists():
        return []
    names = set(re.findall(r"\bPkgID\.([A-Z][A-Z0-9_]*)\b", path.read_text()))
    return sorted(tree.members[n] for n in names if n in tree.members and tree.members[n] <= MAX_ID)


def _range_start(tree: Tree, name: str, module: str) -> tuple[int, int, str] | None:
    """(hundred-block, first id to try, why) for a new package (see the module docstring)."""
    ids = module_ids(tree, module)
    if ids:
        return ids[-1] // 100 * 100, ids[-1] + 1, f"after module {module!r}'s highest id {ids[-1]}"
    prefix = name.split("_")[0].upper() + "_"
    family = sorted(v for n, v in tree.members.items() if n.startswith(prefix) and v <= MAX_ID)
    if family:
        return family[-1] // 100 * 100, family[-1] + 1, f"after the highest {prefix}* id {family[-1]}"
    for block, words in RANGE_KEYWORDS.items():
        for word in (module, name.split("_")[0]):
            if word in words:
                return block, block, f"the {block}-{block + 99} range of {word!r} (docs/protocol.md)"
    return None


def default_pkg_id(tree: Tree, name: str, module: str) -> tuple[int | None, str]:
    """The next free id for a new package and why it was chosen, or None and why there is none."""
    found = _range_start(tree, name, module)
    if found is None:
        return None, (
            f"cannot tell which package-id block (docs/protocol.md) module {module!r} / name {name!r} "
            "belongs to; "
            f"pass pkg_id=<{MIN_ID}-{MAX_ID}>"
        )
    block, first, why = found
    taken = tree.taken()
    for candidate in [*range(first, block + 100), *range(block, first)]:
        if MIN_ID <= candidate <= MAX_ID and candidate not in taken:
            return candidate, why
    return None, f"every id of {block}-{block + 99} is taken; pass pkg_id explicitly"
