"""``make ws-handlers``: print every registered package and flag registry/actions.json mismatches.

    python -m app.devtools.handlers_table [--strict]

Columns: id, name, handler (``module:function``), least role (actions.json),
request schema summary (``*`` = required, ``…`` = other keys allowed). Below
the table: ids in actions.json without a handler, handlers without an
actions.json entry (the server refuses to start), PkgID members nobody uses,
and the server-to-client events (900+), which are never handlers.
``--strict`` exits 1 when actions.json and the handlers disagree.
"""

from __future__ import annotations

import argparse
import sys

from app.devtools.registry_report import Report, collect, pkg_name

_HEADERS = ("id", "name", "handler", "role", "request data (* required)")


def render(report: Report) -> str:
    """The table and the findings as plain text (what ``make ws-handlers`` prints)."""
    rows = [
        (str(p.pkg_id), p.name, p.handler, p.role or "MISSING", p.schema_summary()) for p in report.packages
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(_HEADERS)]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].rjust(widths[0])
        rest = [c.ljust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
        return "  ".join([first, *rest, cells[-1]]).rstrip()

    out = [line(_HEADERS), line(tuple("-" * w for w in widths))]
    out += [line(r) for r in rows]
    out.append("")
    out.append(f"{len(report.packages)} packages registered.")
    if report.roles_without_handler:
        out.append("")
        out.append("In actions.json but no handler registered (clients get UNKNOWN_PKG_ID):")
        out += [f"  {pid:>4}  {_name(report, pid)} ({role})" for pid, role in report.roles_without_handler]
    if report.handlers_without_role:
        out.append("")
        out.append("Handler registered but no actions.json 'ws' entry (the server refuses to start):")
        out += [f"  {pid:>4}  {_name(report, pid)}" for pid in report.handlers_without_role]
    if report.unused_pkg_ids:
        out.append("")
        out.append("PkgID members with neither handler nor actions.json entry:")
        out += [f"  {pid:>4}  {name}" for pid, name in report.unused_pkg_ids]
    if report.events:
        out.append("")
        out.append("Events (server to client, not handlers):")
        out += [f"  {e.pkg_id:>4}  {e.name}" for e in report.events]
    if report.consistent:
        out.append("")
        out.append("actions.json and the registered handlers agree.")
    return "\n".join(out) + "\n"


def _name(report: Report, pkg_id: int) -> str:
    for p in report.packages:
        if p.pkg_id == pkg_id:
            return p.name
    return pkg_name(pkg_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make ws-handlers", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when actions.json and the handlers disagree"
    )
    args = parser.parse_args(argv)
    report = collect()
    sys.stdout.write(render(report))
    return 1 if args.strict and not report.consistent else 0


if __name__ == "__main__":
    raise SystemExit(main())
