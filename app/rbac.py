"""actions.json: the least role of every package and HTTP route (docs/protocol.md, "RBAC").

Loaded once at start. ``check_registry`` makes the server refuse to start
(fail closed) when a registered package has no entry or names an unknown role.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "actions.json"
PUBLIC = "public"
#: A package any authenticated connection may call, with or without a tenant role:
#: a platform administrator who belongs to no tenant yet must still be able to ask
#: who it is, refresh its token, list and create tenants.
AUTHENTICATED = "authenticated"


class RBACConfigError(RuntimeError):
    """actions.json is missing, malformed or does not cover the registry."""


@dataclass(frozen=True)
class Policy:
    roles: tuple[str, ...]
    ws: dict[int, str]
    http: dict[str, dict[str, str]]

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
        if needed == AUTHENTICATED:
            return True
        return self.rank(role) >= self.roles.index(needed)

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
        if role not in roles and role != AUTHENTICATED:
            problems.append(f"ws {key} names unknown role {role!r}")
            continue
        ws[int(key)] = role
    http: dict[str, dict[str, str]] = {}
    for route, methods in (raw.get("http") or {}).items():
        for method, role in methods.items():
            if role != PUBLIC and role not in roles:
                problems.append(f"http {route} {method} names unknown role {role!r}")
        http[route] = dict(methods)
    if problems:
        raise RBACConfigError(f"{path}: " + "; ".join(problems))
    return Policy(roles=tuple(roles), ws=ws, http=http)
