"""A fleet definition: the whole set of a tenant's monitors as one document
(MONITOR_IMPORT 108 / MONITOR_EXPORT 109, docs/monitoring.md "Fleet import and export").

Each row is a complete definition keyed by its name: a field the row leaves out
means the default, exactly as MONITOR_CREATE would store it, so importing the
same file twice changes nothing the second time. Group members, alert
channels, ``depends_on`` and ``escalation_policy`` may be named instead of
numbered, which makes a file portable between tenants and installations.

:func:`plan` is pure: it compares the rows with what the tenant has and returns
what to create, change and delete, or raises ``InvalidData`` naming every bad
row (index and name) and field. It reuses :func:`validate_definition`, so single
and bulk edits obey one rule set.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.errors import InvalidData
from app.monitoring import kinds
from app.monitoring.definition import (
    DEFAULTS,
    ROUTING_DEFAULTS,
    default_timeout,
    merge_update,
    normalise,
    unknown_locations,
    validate_definition,
    with_defaults,
)
from app.monitoring.request import mask_request
from app.urls import mask_credentials

#: What a row defines; everything else on a monitor (state, push token, schedule) is not
#: part of a fleet definition.
FIELDS = ("kind", *DEFAULTS)
#: Alert routing a row defines too (``depends_on``, ``covers_members``, ``escalation_policy``):
#: other monitors and a policy, by name or id, resolved here as members are.
ROUTING = tuple(ROUTING_DEFAULTS)
#: Everything the planner compares (a Stored definition without routing keys has their defaults).
COMPARED = (*FIELDS, *ROUTING)

#: A group member in a plan: an existing monitor's id, or the name of one this import creates.
Ref = int | str

#: How many row errors one refusal lists (the message names the first).
MAX_ERRORS = 20


@dataclass(frozen=True, slots=True)
class Stored:
    """A monitor the tenant has, as the planner compares it (``definition`` has :data:`FIELDS`,
    the URL with its credentials)."""

    id: int
    name: str
    definition: Mapping[str, Any]


@dataclass(slots=True)
class Create:
    row: int
    name: str
    values: dict[str, Any]


@dataclass(slots=True)
class Change:
    row: int
    id: int
    name: str
    #: Only the fields that differ; ``members`` and ``depends_on`` may hold names of monitors
    #: this import creates.
    changes: dict[str, Any]
    values: dict[str, Any]


@dataclass(slots=True)
class Plan:
    create: list[Create] = field(default_factory=list)
    update: list[Change] = field(default_factory=list)
    delete: list[Stored] = field(default_factory=list)
    unchanged: int = 0

    def diff(self) -> dict[str, Any]:
        """The dry-run answer (and the applied one): names, changed field names, counts."""
        return {
            "create": [c.name for c in self.create],
            "update": [{"name": c.name, "fields": sorted(c.changes)} for c in self.update],
            "delete": [s.name for s in self.delete],
            "unchanged": self.unchanged,
        }

    def create_layers(self) -> list[list[Create]]:
        """Creates in insertion rounds: a group comes after the new monitors it names."""
        depth: dict[str, int] = {}
        by_name = {c.name: c for c in self.create}

        def level(name: str) -> int:
            if name not in depth:
                depth[name] = 0  # no cycles reach here: plan() refused them
                refs = [m for m in by_name[name].values.get("members") or [] if isinstance(m, str)]
                depth[name] = 1 + max((level(r) for r in refs), default=-1)
            return depth[name]

        layers: dict[int, list[Create]] = {}
        for c in self.create:
            layers.setdefault(level(c.name), []).append(c)
        return [layers[d] for d in sorted(layers)]


class _Errors:
    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, row: int, name: str, path: str, msg: str) -> None:
        if len(self.items) < MAX_ERRORS:
            where = f"monitors[{row}]" + (f".{path}" if path else "")
            self.items.append({"path": where, "name": name, "msg": f"row {row} ({name!r}): {msg}"})

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidData(
                f"{self.items[0]['msg']}; fix the rows listed in errors, nothing was applied",
                errors=self.items,
            )


def plan(
    rows: Sequence[Mapping[str, Any]],
    stored: Sequence[Stored],
    channels: Mapping[str, int],
    *,
    delete_missing: bool,
    min_interval: int,
    timeout_max: float,
    locations: Collection[str] = (),
    policies: Mapping[str, int] | None = None,
) -> Plan:
    """Compare ``rows`` (schema-checked) with the tenant's ``stored`` monitors, ``channels``
    and escalation ``policies`` (name -> id) and probe ``locations`` (names); raise
    ``InvalidData`` listing bad rows."""
    errors = _Errors()
    by_name = {s.name: s for s in stored}
    by_id = {s.id: s for s in stored}
    channel_ids = set(channels.values())
    policies = policies or {}
    policy_ids = set(policies.values())
    first_row: dict[str, int] = {}
    for i, row in enumerate(rows):
        name = row["name"]
        if name in first_row:
            errors.add(i, name, "name", f"the name is also used by row {first_row[name]}; names are unique")
        else:
            first_row[name] = i
    deleted = {s.name for s in stored if s.name not in first_row} if delete_missing else set()

    result = Plan()
    final_members: dict[str, list[str]] = {
        s.name: [by_id[m].name for m in s.definition.get("members") or [] if m in by_id]
        for s in stored
        if s.name not in first_row and s.name not in deleted
    }
    final_deps: dict[str, list[str]] = {
        s.name: [by_id[d].name for d in _stored_value(s.definition, "depends_on") if d in by_id]
        for s in stored
        if s.name not in first_row and s.name not in deleted
    }
    for i, row in enumerate(rows):
        name = row["name"]
        if first_row[name] != i:
            continue
        full = with_defaults({**ROUTING_DEFAULTS, **row}, timeout_max=timeout_max)
        full["channels"], unknown = _channels(full["channels"], channels, channel_ids)
        if unknown:
            errors.add(i, name, "channels", unknown)
        members, problems = _refs(full["members"], first_row, by_name, by_id, deleted, "member")
        for msg in problems:
            errors.add(i, name, "members", msg)
        full["members"] = members
        deps, dep_problems = _refs(full["depends_on"], first_row, by_name, by_id, deleted, "dependency")
        for msg in dep_problems:
            errors.add(i, name, "depends_on", msg)
        full["depends_on"] = deps
        full["escalation_policy"], unknown = _policy(full["escalation_policy"], policies, policy_ids)
        if unknown:
            errors.add(i, name, "escalation_policy", unknown)
        existing = by_name.get(name)
        values = normalise(
            merge_update(existing.definition, full, timeout_max=timeout_max) if existing else full
        )
        own = [name] + ([existing.id] if existing else [])
        if any(m in own for m in members):
            errors.add(i, name, "members", "a group cannot be its own member")
        if any(d in own for d in deps):
            errors.add(i, name, "depends_on", "a monitor cannot depend on itself")
        dep_names = [d if isinstance(d, str) else by_id[d].name for d in deps]
        if len(set(dep_names)) != len(dep_names):
            errors.add(i, name, "depends_on", "depends_on must not repeat a monitor (by name or id)")
        final_deps[name] = dep_names
        place_problem = unknown_locations(values["locations"], locations)
        if place_problem:
            errors.add(i, name, "locations", place_problem)
        try:
            validate_definition(values, min_interval=min_interval, timeout_max=timeout_max)
        except InvalidData as exc:
            for e in exc.errors or []:
                # An unresolved member is reported above; the shorter list it leaves is no news.
                if not (problems and e["path"] in ("members", "min_up")):
                    errors.add(i, name, e["path"], e["msg"])
        final_members[name] = [m if isinstance(m, str) else by_id[m].name for m in members]
        if existing is None:
            result.create.append(Create(i, name, values))
            continue
        changes = {k: values[k] for k in COMPARED if _stored_value(existing.definition, k) != values[k]}
        if changes:
            result.update.append(Change(i, existing.id, name, changes, values))
        else:
            result.unchanged += 1
    for cycle_name in _cycle(final_members, first_row):
        errors.add(first_row[cycle_name], cycle_name, "members", "groups would contain each other (a cycle)")
    for name, i in first_row.items():
        # As MONITOR_CREATE/UPDATE: no two monitors depending on each other (longer chains are fine).
        for dep in final_deps.get(name, ()):
            if dep != name and name in final_deps.get(dep, ()):
                errors.add(i, name, "depends_on", f"{dep!r} depends on this monitor (a cycle)")
    errors.raise_if_any()
    result.delete = [s for s in stored if s.name in deleted]
    return result


def _channels(
    wanted: Sequence[int | str], by_name: Mapping[str, int], ids: set[int]
) -> tuple[list[int], str | None]:
    out: list[int] = []
    unknown: list[str] = []
    for ref in wanted:
        cid = by_name.get(ref) if isinstance(ref, str) else (ref if ref in ids else None)
        if cid is None:
            unknown.append(repr(ref))
        elif cid not in out:
            out.append(cid)
    if unknown:
        return out, f"unknown alert channels {', '.join(unknown)}: give a name or id that CHANNEL_LIST shows"
    return out, None


def _stored_value(definition: Mapping[str, Any], key: str) -> Any:
    """A stored field as a row would give it (routing absent or NULL: its default)."""
    value = definition.get(key)
    if key in ROUTING_DEFAULTS and value is None:
        return ROUTING_DEFAULTS[key]
    if key == "depends_on":
        return list(value or [])
    return value


def _policy(
    wanted: int | str | None, by_name: Mapping[str, int], ids: set[int]
) -> tuple[int | None, str | None]:
    if wanted is None:
        return None, None
    pid = by_name.get(wanted) if isinstance(wanted, str) else (wanted if wanted in ids else None)
    if pid is None:
        return None, f"unknown escalation policy {wanted!r}: give a name or id that ESCALATION_LIST shows"
    return pid, None


def _refs(
    wanted: Sequence[int | str],
    in_file: Mapping[str, int],
    by_name: Mapping[str, Stored],
    by_id: Mapping[int, Stored],
    deleted: set[str],
    what: str,
) -> tuple[list[Ref], list[str]]:
    """Group members or dependencies: existing monitors' ids, or names of rows this import creates."""
    out: list[Ref] = []
    problems: list[str] = []
    for ref in wanted:
        target = by_id.get(ref) if isinstance(ref, int) else by_name.get(ref)
        if target is not None and target.name not in deleted:
            out.append(target.id)
        elif isinstance(ref, str) and ref in in_file:
            out.append(ref)  # created by this import; its id is known once inserted
        elif target is not None:
            problems.append(f"{what} {ref!r} is not in the file and delete_missing removes it")
        else:
            problems.append(f"{what} {ref!r} is neither a row of this file nor a monitor of this tenant")
    return out, problems


def _cycle(graph: Mapping[str, Sequence[str]], rows: Mapping[str, int]) -> list[str]:
    """Names of file rows found on membership cycles (iterative DFS; graph keys are names)."""
    colour: dict[str, int] = {}
    found: list[str] = []
    for start in graph:
        if colour.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(start, 0)]
        while stack:
            node, pos = stack.pop()
            if pos == 0:
                colour[node] = 1
                path.append(node)
            children = graph.get(node, ())
            if pos < len(children):
                stack.append((node, pos + 1))
                child = children[pos]
                if colour.get(child) == 1:
                    cycle = path[path.index(child) :]
                    hit = next((n for n in cycle if n in rows), None)
                    if hit is not None and hit not in found:
                        found.append(hit)
                elif not colour.get(child):
                    stack.append((child, 0))
            else:
                colour[node] = 2
                path.pop()
    return found


_NULL_IS_DEFAULT = ("max_redirects", "headers", "conditions", "cert_alert_days")


def to_row(
    definition: Mapping[str, Any],
    name: str,
    *,
    member_names: Mapping[int, str],
    channel_names: Mapping[int, str],
    timeout_max: float,
    policy_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """A stored monitor as an import row: only fields that differ from the default, members,
    channels, dependencies (``member_names`` maps every monitor id) and the escalation policy by
    name, credentials in the URL masked (as everywhere a URL is shown)."""
    row: dict[str, Any] = {"name": name, "kind": definition["kind"]}
    for key, default in DEFAULTS.items():
        value = definition.get(key)
        if key == "timeout":
            default = default_timeout(definition.get("interval"), timeout_max)
        elif key == "members":
            value = [member_names.get(m, m) for m in value or []]
        elif key == "channels":
            value = [channel_names.get(c, c) for c in value or []]
        elif key == "url" and value:
            value = mask_credentials(value)
        elif key in ("headers", "auth"):
            # Auth secrets and secret header values are write-only, as in every answer.
            headers, auth = mask_request(definition.get("headers"), definition.get("auth"))
            value = headers if key == "headers" else auth
        elif key == "options":
            # Connection strings and header values masked too; importing the row back keeps them.
            value = kinds.mask_options(str(definition["kind"]), value)
        if value is None and key in _NULL_IS_DEFAULT:  # rows stored before these fields existed
            value = default
        if value != default:
            row[key] = value
    # A dependency on a monitor that no longer exists means nothing (MONITOR_DELETE removes them).
    deps = [member_names[d] for d in _stored_value(definition, "depends_on") if d in member_names]
    if deps:
        row["depends_on"] = deps
    if definition.get("covers_members"):
        row["covers_members"] = True
    policy = definition.get("escalation_policy")
    if policy is not None:
        row["escalation_policy"] = (policy_names or {}).get(policy, policy)
    return row
