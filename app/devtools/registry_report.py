"""One view of the package registry for the developer tools: handlers, roles, schemas, events.

``collect()`` builds the router exactly as the server does
(:func:`app.handlers.build_router`), reads ``actions.json`` as written (so a
broken entry is shown rather than refused) and lines the two up. Both
``make ws-handlers`` and ``make ws-docs`` print from the :class:`Report` it
returns, so the table and the reference cannot disagree.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.protocol import PkgID
from app.rbac import DEFAULT_PATH

#: Ids from here up are server-to-client events (docs/protocol.md, "Package ids"): never handlers.
FIRST_EVENT_ID = 900


@dataclass(frozen=True)
class PackageInfo:
    """One registered package, as the tools show it."""

    pkg_id: int
    name: str
    #: ``module:function`` of the handler.
    handler: str
    #: Least role from actions.json; None when actions.json has no entry.
    role: str | None
    schema: dict[str, Any] | None
    summary: str
    response_example: Any
    audit: bool
    #: True when the handler returns a ``Page`` (the response carries ``meta``).
    paginated: bool

    @property
    def required(self) -> list[str]:
        return list((self.schema or {}).get("required", []))

    @property
    def properties(self) -> list[str]:
        return list((self.schema or {}).get("properties", {}))

    def schema_summary(self) -> str:
        """``name*, role*, expires_at`` (``*`` = required); ``(any)`` / ``(none)`` for open / empty."""
        if not self.schema or self.schema == {"type": "object"}:
            return "(any)"
        props = self.properties
        if not props:
            return "(none)" if self.schema.get("additionalProperties") is False else "(any)"
        required = set(self.required)
        out = ", ".join(f"{p}*" if p in required else p for p in props)
        if self.schema.get("additionalProperties") is not False:
            out += ", …"
        return out


@dataclass(frozen=True)
class EventInfo:
    pkg_id: int
    name: str


@dataclass
class Report:
    packages: list[PackageInfo]
    events: list[EventInfo]
    #: ids with an actions.json "ws" entry but no handler (events excluded).
    roles_without_handler: list[tuple[int, str]] = field(default_factory=list)
    #: ids with a handler but no actions.json entry (the server refuses to start).
    handlers_without_role: list[int] = field(default_factory=list)
    #: PkgID members below 900 with neither handler nor actions.json entry.
    unused_pkg_ids: list[tuple[int, str]] = field(default_factory=list)
    #: actions.json "topics": topic name (``{id}`` for an object id) -> least role, in file order.
    topics: dict[str, str] = field(default_factory=dict)

    @property
    def consistent(self) -> bool:
        return not (self.roles_without_handler or self.handlers_without_role)


def pkg_name(pkg_id: int) -> str:
    try:
        return PkgID(pkg_id).name
    except ValueError:
        return "?"


def _returns_page(fn: Any) -> bool:
    annotation = inspect.signature(fn).return_annotation
    return annotation == "Page" or getattr(annotation, "__name__", None) == "Page"


def collect(actions_path: Path = DEFAULT_PATH) -> Report:
    """Build the registry as the server does and line it up with ``actions.json`` and ``PkgID``."""
    from app.handlers import build_router

    specs = build_router().specs
    raw = json.loads(Path(actions_path).read_text())
    ws = {int(k): str(v) for k, v in raw.get("ws", {}).items() if str(k).isdigit()}
    packages = [
        PackageInfo(
            pkg_id=pid,
            name=spec.name,
            handler=f"{spec.handler.__module__}:{spec.handler.__qualname__}",
            role=ws.get(pid),
            schema=spec.schema,
            summary=spec.summary,
            response_example=spec.response_example,
            audit=spec.audit,
            paginated=_returns_page(spec.handler),
        )
        for pid, spec in sorted(specs.items())
    ]
    event_ids = sorted(
        {m.value for m in PkgID if m.value >= FIRST_EVENT_ID} | {i for i in ws if i >= FIRST_EVENT_ID}
    )
    return Report(
        packages=packages,
        events=[EventInfo(i, pkg_name(i)) for i in event_ids],
        roles_without_handler=[
            (i, r) for i, r in sorted(ws.items()) if i < FIRST_EVENT_ID and i not in specs
        ],
        handlers_without_role=[i for i in sorted(specs) if i not in ws],
        unused_pkg_ids=[
            (m.value, m.name)
            for m in sorted(PkgID, key=int)
            if m.value < FIRST_EVENT_ID and m.value not in specs and m.value not in ws
        ],
        topics={str(k): str(v) for k, v in (raw.get("topics") or {}).items()},
    )
