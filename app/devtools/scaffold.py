"""``make new-ws-handlers``: scaffold one package from the Jinja2 templates in ``handlers_templates/``.

    python -m app.devtools.scaffold --name device_list --pkg-id 150 --role viewer --module devices

What it writes (and nothing else):

- ``PkgID.DEVICE_LIST = 150`` in ``app/protocol.py``, in numeric order;
- ``"150": "viewer"`` in the ``"ws"`` object of ``actions.json``, in numeric order,
  with the file's indentation;
- the handler and its request schema: a new module ``app/handlers/<module>.py``,
  or appended at the end of a module this scaffold created earlier (it carries
  :data:`MODULE_MARKER`). A hand-written module is never touched;
- ``tests/test_<module>_<name>.py``: an end-to-end test over a real socket.

Everything is validated and rendered in memory first; any problem refuses the
whole request with every reason at once and no file changed. The files are then
written through temporary files renamed into place.

Default ``pkg_id``: the next free id of the module's package-id block (docs/protocol.md); the
rule is in :mod:`app.devtools.pkg_ids`.
"""

from __future__ import annotations

import argparse
import ast
import json
import keyword
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.devtools import insertions
from app.devtools.pkg_ids import MAX_ID, MIN_ID, Tree, default_pkg_id
from app.devtools.pyliteral import pyliteral

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = "handlers_templates"
#: First line of a module's docstring tail that marks it as scaffold-created (appendable).
MODULE_MARKER = "Created by `make new-ws-handlers`"
#: Names an appended handler (handler.py.j2) uses from its module's header (module.py.j2).
_APPEND_NEEDS = frozenset({"Any", "Context", "PkgID", "Request", "router"})
#: Longer names would push generated lines past the 110-column limit.
MAX_NAME = 30
_IDENT = re.compile(r"^[a-z][a-z0-9_]*$")


class ScaffoldError(Exception):
    """The request was refused; ``problems`` lists every reason. No file was changed."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Plan:
    """Every file the scaffold will write, with its full new content (paths relative to the root)."""

    pkg_id: int
    const: str
    writes: dict[str, str]
    created: list[str] = field(default_factory=list)


def _check_identifier(label: str, value: str) -> str | None:
    if not _IDENT.match(value) or keyword.iskeyword(value) or keyword.issoftkeyword(value):
        return (
            f"{label}={value!r} is not a valid lower_snake_case Python identifier "
            "(start with a letter; letters, digits and underscores only; not a keyword)"
        )
    if len(value) > MAX_NAME:
        return f"{label}={value!r} is longer than {MAX_NAME} characters; choose a shorter one"
    return None


def _environment(root: Path) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(root / TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["pyliteral"] = pyliteral
    return env


def _defined_names(source: str) -> set[str]:
    tree = ast.parse(source)
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            out.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
    return out


def plan(root: Path, *, name: str, module: str, role: str, pkg_id: int | None) -> Plan:
    """Validate the request against the tree at ``root`` and render every file; write nothing.

    Raises :class:`ScaffoldError` listing every problem; the caller fixes the
    arguments and calls again. On success pass the plan to :func:`apply`.
    """
    tree = Tree.read(root)
    problems = [p for p in (_check_identifier("name", name), _check_identifier("module", module)) if p]
    const = name.upper()
    if module.startswith("_"):
        problems.append(f"module={module!r}: modules starting with '_' are not discovered by app.handlers")
    if role not in tree.roles:
        problems.append(f"role={role!r} is not a role in actions.json; use one of {tree.roles}")
    if const in tree.members:
        problems.append(f"name={name!r} is taken: PkgID.{const} = {tree.members[const]} already exists")
    if pkg_id is None and not problems:
        pkg_id, why = default_pkg_id(tree, name, module)
        if pkg_id is None:
            problems.append(why)
    if pkg_id is not None:
        if not MIN_ID <= pkg_id <= MAX_ID:
            problems.append(
                f"pkg_id={pkg_id} is outside {MIN_ID}-{MAX_ID} (900-999 are server-to-client events, "
                "not handlers)"
            )
        owner = next((n for n, v in tree.members.items() if v == pkg_id), None)
        if owner is not None:
            problems.append(f"pkg_id={pkg_id} is taken by PkgID.{owner}")
        elif pkg_id in tree.ws:
            problems.append(f"pkg_id={pkg_id} is taken: actions.json already has a 'ws' entry for it")

    module_rel = f"app/handlers/{module}.py"
    test_rel = f"tests/test_{module}_{name}.py"
    existing_module: str | None = None
    if not problems:
        module_path = root / module_rel
        if module_path.with_suffix("").is_dir():
            problems.append(f"app/handlers/{module}/ is a package; choose another module=")
        elif module_path.exists():
            existing_module = module_path.read_text()
            if MODULE_MARKER not in existing_module:
                problems.append(
                    f"{module_rel} exists and was not created by this scaffold; it is never rewritten or "
                    "appended to: choose another module= or add the handler there by hand"
                )
            else:
                defined = _defined_names(existing_module)
                clashes = defined & {name, f"_{const}_SCHEMA"}
                if clashes:
                    problems.append(f"{module_rel} already defines {sorted(clashes)}; choose another name=")
                lost = sorted(_APPEND_NEEDS - defined)
                if lost:
                    problems.append(
                        f"{module_rel} no longer defines or imports {lost}, which an appended handler uses; "
                        "restore them or add the handler by hand"
                    )
        if (root / test_rel).exists():
            problems.append(f"{test_rel} exists and would be overwritten; choose another name= or module=")
    if problems:
        raise ScaffoldError(problems)
    assert pkg_id is not None

    env = _environment(root)
    schema = json.loads(env.get_template("schema.json.j2").render())
    from jsonschema import Draft202012Validator

    Draft202012Validator.check_schema(schema)
    values = {
        "name": name,
        "const": const,
        "module": module,
        "role": role,
        "pkg_id": pkg_id,
        "schema": schema,
        "module_rel": module_rel,
        # The role just below the package's, for the generated refusal test (None for the lowest).
        "lower_role": tree.roles[tree.roles.index(role) - 1] if tree.roles.index(role) > 0 else None,
    }
    writes: dict[str, str] = {
        "app/protocol.py": insertions.insert_pkgid_member(tree.protocol, const, pkg_id),
        "actions.json": insertions.insert_ws_role(tree.actions, pkg_id, role),
        test_rel: _finish(env.get_template("test.py.j2").render(values)),
    }
    created = [test_rel]
    if existing_module is None:
        writes[module_rel] = _finish(env.get_template("module.py.j2").render(values))
        created.append(module_rel)
    else:
        handler = _finish(env.get_template("handler.py.j2").render(values))
        writes[module_rel] = existing_module.rstrip("\n") + "\n\n\n" + handler
    for rel, text in writes.items():
        if rel.endswith(".py"):
            ast.parse(text, filename=rel)  # a broken template must fail here, before any write
    return Plan(pkg_id=pkg_id, const=const, writes=writes, created=created)


def _finish(text: str) -> str:
    return text.strip("\n") + "\n"


def apply(root: Path, plan: Plan) -> None:
    """Write the plan: every file to a temporary sibling first, then rename each into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for rel, text in plan.writes.items():
            target = root / rel
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            if target.exists():
                os.chmod(tmp, target.stat().st_mode & 0o7777)
            else:
                os.chmod(tmp, 0o644)
            staged.append((tmp, target))
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, target in staged:
        os.replace(tmp, target)


def _prompt(label: str, default: str | None, ask: Callable[[str], str]) -> str:
    suffix = f" [{default}]" if default else ""
    while True:
        answer = ask(f"{label}{suffix}: ").strip()
        if answer:
            return answer
        if default:
            return default


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make new-ws-handlers",
        description="Scaffold a package: PkgID member, handler with schema, actions.json entry, test.",
    )
    parser.add_argument("--name", help="lower_snake_case package name, e.g. device_list (PkgID.DEVICE_LIST)")
    parser.add_argument(
        "--pkg-id", dest="pkg_id", help="package id 1-899; default: next free in the module's range"
    )
    parser.add_argument("--role", help="least role that may call it (a role in actions.json)")
    parser.add_argument("--module", help="handler module under app/handlers/, e.g. devices")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _complete_interactively(args: argparse.Namespace, ask: Callable[[str], str]) -> None:
    tree = Tree.read(args.root)
    if not args.name:
        args.name = _prompt("name (e.g. device_list)", None, ask)
    if not args.module:
        args.module = _prompt("module (app/handlers/<module>.py)", None, ask)
    if not args.role:
        args.role = _prompt(f"role ({', '.join(tree.roles)})", tree.roles[0] if tree.roles else None, ask)
    if not args.pkg_id:
        guess, why = default_pkg_id(tree, args.name, args.module)
        label = f"pkg_id ({why})" if guess is not None else "pkg_id (1-899)"
        args.pkg_id = _prompt(label, str(guess) if guess is not None else None, ask)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make new-ws-handlers``; returns the exit status."""
    args = _parse_args(argv)
    missing = [f for f in ("name", "role", "module") if not getattr(args, f)]
    if missing:
        if sys.stdin.isatty():
            try:
                _complete_interactively(args, input)
            except (EOFError, KeyboardInterrupt):
                print("\nnew-ws-handlers cancelled, nothing changed", file=sys.stderr)
                return 130
        else:
            print(
                f"new-ws-handlers: missing {', '.join(missing)}; pass them as "
                "`make new-ws-handlers name=device_list role=viewer module=devices [pkg_id=150]` "
                "or run it in a terminal to be asked",
                file=sys.stderr,
            )
            return 2
    pkg_id: int | None = None
    if args.pkg_id:
        try:
            pkg_id = int(args.pkg_id)
        except ValueError:
            print(
                f"new-ws-handlers refused, nothing changed:\n  - pkg_id={args.pkg_id!r} is not an integer",
                file=sys.stderr,
            )
            return 1
    try:
        result = plan(args.root, name=args.name, module=args.module, role=args.role, pkg_id=pkg_id)
    except ScaffoldError as exc:
        lines = "\n".join(f"  - {p}" for p in exc.problems)
        print(f"new-ws-handlers refused, nothing changed:\n{lines}", file=sys.stderr)
        return 1
    apply(args.root, result)
    print(f"PkgID.{result.const} = {result.pkg_id} (role {args.role}) scaffolded:")
    for rel in result.writes:
        print(f"  {'created ' if rel in result.created else 'updated '} {rel}")
    print("next: fill in the handler and its test, then run `make check` and the test.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
