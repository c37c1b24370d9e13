"""actions.json: the least role of every package and HTTP route (docs/protocol.md, "RBAC").

It holds the role ladder (``roles``), the least role of every package
(``ws``) and of every topic a client may subscribe to (``topics``). Code asks
the :class:`Policy`; no role name is written anywhere else. HTTP routes have
no entry: they are public by design (docs/protocol.md, "Where each rule lives").

Loaded once at start. ``check_registry`` makes the server refuse to start
(fail closed) when a registered package has no entry or names an unknown role.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from app.protocol import PkgID

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "actions.json"
#: A package any authenticated connection may call, with or without a tenant role:
#: a platform administrator who belongs to no tenant yet must still be able to ask
#: who it is, refresh its token, list and create tenants.
AUTHENTICATED = "authenticated"
#: The role of a probe's API token (docs/probes.md): outside the ladder. A probe may call
#: the packages marked ``probe`` and nothing else (not even the ``authenticated`` ones),
#: and no other role may call those.
PROBE = "probe"
#: The one placeholder a topic name may carry: an object id (a positive integer of up to 19 digits).
#: Topics are fixed templates, not regular expressions, so actions.json cannot make
#: matching a client's topic name expensive.
_ID_PLACEHOLDER = "{id}"
_ID_PATTERN = "[1-9][0-9]{0,18}"
_TOPIC_TEMPLATE = re.compile(r"[a-z][a-z0-9_]*(?:\.(?:[a-z][a-z0-9_]*|\{id\}))*")
_SECTIONS = {"roles", "ws", "topics"}
#: All an anonymous status-page socket may call, whatever actions.json says: read its
#: page and (un)subscribe its page's topic. Everything else answers 3 PERMISSION_DENIED.
PAGE_VIEWER_PACKAGES = frozenset({int(PkgID.SUBSCRIBE), int(PkgID.UNSUBSCRIBE), int(PkgID.STATUS_PAGE_VIEW)})


def page_topic(page_id: int) -> str:
    """The one topic an anonymous viewer of page ``page_id`` may subscribe to."""
    return f"status_page.{page_id}"


class RBACConfigError(RuntimeError):
    """actions.json is missing, malformed or does not cover the registry."""


@dataclass(frozen=True)
class Policy:
    roles: tuple[str, ...]
    ws: dict[int, str]
    #: Topic template (``monitor.{id}``) -> least role that may read it, in file order.
    topics: dict[str, str]
    _topic_patterns: tuple[tuple[re.Pattern[str], str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        patterns = tuple((_topic_pattern(template), role) for template, role in self.topics.items())
        object.__setattr__(self, "_topic_patterns", patterns)

    def rank(self, role: str | None) -> int:
        """Position on the ladder; -1 for no or unknown role (denies everything)."""
        if role is None:
            return -1
        try:
            return self.roles.index(role)
        except ValueError:
            return -1

    def required_role(self, pkg_id: int) -> str | None:
        return self.ws.get(pkg_id)

    def allows(self, pkg_id: int, role: str | None) -> bool:
        """Only ever asked about authenticated connections (the handshake refuses the rest)."""
        needed = self.ws.get(pkg_id)
        if needed is None:
            return False
        if needed == PROBE or role == PROBE:
            return needed == role
        if needed == AUTHENTICATED:
            return True
        return self.rank(role) >= self.roles.index(needed)

    def topic_role(self, name: str) -> str | None:
        """Least role that may read the tenant-relative topic ``name``; None for no such topic."""
        for pattern, role in self._topic_patterns:
            if pattern.fullmatch(name):
                return role
        return None

    def allowed_packages(self, role: str | None, registered: Iterable[int]) -> list[int]:
        """The registered package ids ``role`` may call, ascending (what WHOAMI reports)."""
        return sorted(pid for pid in registered if self.allows(pid, role))

    def api_token_role(self, issued: str, member: str) -> str:
        """What an API token may do: the lower of the role it was issued with and its
        creator's current role in the tenant (applied at connect and on a live role change)."""
        return min(issued, member, key=self.rank)

    def role_at_least(self, role: str | None, needed: str) -> bool:
        return self.rank(role) >= self.roles.index(needed)

    def check_registry(self, registered: Iterable[int]) -> None:
        """Raise with every problem at once if a registered id is not covered."""
        missing = sorted(pid for pid in registered if pid not in self.ws)
        if missing:
            raise RBACConfigError(
                f"actions.json has no 'ws' entry for registered package ids {missing}; "
                "add each with its least role"
            )


def _topic_pattern(template: str) -> re.Pattern[str]:
    parts = template.split(".")
    return re.compile(r"\.".join(_ID_PATTERN if p == _ID_PLACEHOLDER else re.escape(p) for p in parts))


def load_policy(path: Path | str | None = None) -> Policy:
    path = DEFAULT_PATH if path is None else path
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise RBACConfigError(f"cannot read {path}: {exc}") from None
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise RBACConfigError(f"{path}: 'roles' must be a non-empty list of role names")
    problems = []
    ws: dict[int, str] = {}
    for key, role in (raw.get("ws") or {}).items():
        if not str(key).isdigit():
            problems.append(f"ws key {key!r} is not a package id")
            continue
        if role not in roles and role not in (AUTHENTICATED, PROBE):
            problems.append(f"ws {key} names unknown role {role!r}")
            continue
        ws[int(key)] = role
    topics: dict[str, str] = {}
    raw_topics = raw.get("topics")
    if not isinstance(raw_topics, dict) or not raw_topics:
        problems.append("'topics' must map each subscribable topic to its least role")
        raw_topics = {}
    for name, role in raw_topics.items():
        if not _TOPIC_TEMPLATE.fullmatch(name):
            problems.append(
                f"topic {name!r} is not a topic name: lower-case words joined by '.', "
                "with '{id}' standing for an object id"
            )
        elif role not in roles:
            problems.append(f"topic {name!r} names unknown role {role!r}")
        else:
            topics[name] = role
    unknown = sorted(set(raw) - _SECTIONS)
    if "http" in unknown:
        problems.append(
            "the 'http' section is not read: HTTP routes are public and guard themselves "
            "(docs/protocol.md, 'Where each rule lives'); remove it"
        )
        unknown.remove("http")
    if unknown:
        problems.append(f"unknown sections {unknown}; actions.json has only {sorted(_SECTIONS)}")
    if problems:
        raise RBACConfigError(f"{path}: " + "; ".join(problems))
    return Policy(roles=tuple(roles), ws=ws, topics=topics)
