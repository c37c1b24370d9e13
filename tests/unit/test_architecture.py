"""The import rules of docs/architecture.md ("Layers: what may import what").

Pure: reads the source of every server module and fails when a lower layer
imports a higher one. Imports under ``if TYPE_CHECKING:`` are types, not
dependencies, and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"

#: Module or package (dotted, under app) -> layer. The longest matching prefix wins.
LAYERS: dict[str, int] = {
    **dict.fromkeys(("protocol", "errors", "settings", "urls", "client_time", "metrics", "logs", "ids"), 0),
    **dict.fromkeys(("models", "storage"), 1),
    **dict.fromkeys(("broker", "limits", "events", "control", "egress", "rbac", "quotas"), 2),
    **dict.fromkeys(("auth", "monitoring", "alerting", "statuspages"), 3),
    **dict.fromkeys(("context", "session", "routing", "schema_errors", "handlers"), 4),
    # The probe program: the check runners plus the client; nothing of the server imports it.
    "probe": 4,
    **dict.fromkeys(("ws", "http", "http_body", "forwarded", "status_http"), 5),
    **dict.fromkeys(("", "bootstrap", "cli", "__main__"), 6),
}
#: Packages outside the server's layers: checked by their own tests (packaging, client constants).
OUTSIDE = ("bench", "devtools", "client", "dashboard")
#: Edges between two packages of the same layer that docs/architecture.md allows.
SAME_LAYER_ALLOWED = {("monitoring", "alerting"), ("statuspages", "monitoring")}
#: Layer-3 packages that must never import the socket layer (checked even if layers change).
NO_SOCKET = ("handlers", "monitoring", "alerting", "auth", "statuspages")


def _module_name(path: Path) -> str:
    rel = path.relative_to(APP).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _layer(name: str) -> int | None:
    top = _top(name)
    if top in OUTSIDE:
        return None
    if top not in LAYERS:
        raise AssertionError(
            f"app.{name}: not assigned to a layer; add it to LAYERS and docs/architecture.md"
        )
    return LAYERS[top]


def _is_module(name: str) -> bool:
    return (APP / f"{name}.py").exists() or (APP / name).is_dir()


def _runtime_imports(path: Path) -> set[str]:
    """Modules under app imported at run time (``app.x.y`` -> ``x.y``)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "app":
                # `from app import metrics` names a module; `from app import create_app` the package.
                found.update(a.name if _is_module(a.name) else "" for a in node.names)
            elif node.module.startswith("app."):
                found.add(node.module[4:])
        elif isinstance(node, ast.Import):
            found.update(a.name[4:] for a in node.names if a.name.startswith("app."))
    return found


def _edges() -> list[tuple[str, str]]:
    edges = []
    for path in sorted(APP.rglob("*.py")):
        source = _module_name(path)
        if _top(source) in OUTSIDE:
            continue
        for target in sorted(_runtime_imports(path)):
            if target and _top(target) != _top(source):
                edges.append((source, target))
    return edges


def test_every_server_module_has_a_layer() -> None:
    for path in APP.rglob("*.py"):
        _layer(_module_name(path))  # raises for an unassigned module


def test_no_lower_layer_imports_a_higher_one() -> None:
    broken = []
    for source, target in _edges():
        src, dst = _layer(source), _layer(target)
        if src is None or dst is None:
            if dst is None and _top(target) in ("bench", "devtools"):
                broken.append(f"app.{source} imports dev-only app.{target}")
            continue
        if dst > src:
            broken.append(f"app.{source} (layer {src}) imports app.{target} (layer {dst})")
        elif dst == src and not _same_layer_ok(src, source, target):
            broken.append(f"app.{source} imports app.{target}: same-layer edge not in the rules")
    assert broken == [], "\n".join(broken)


def _same_layer_ok(layer: int, source: str, target: str) -> bool:
    if (_top(source), _top(target)) in SAME_LAYER_ALLOWED:
        return True
    if layer == 2:
        # Infrastructure may build on the broker and on events (control messages ride its control topic).
        return _top(target) in ("broker", "events")
    # Foundation, data, application and edge modules may use their neighbours; the three
    # domain packages (layer 3) stay apart except for the edges SAME_LAYER_ALLOWED names.
    return layer != 3


def test_handlers_and_domain_know_no_socket() -> None:
    offenders = [f"app.{s} imports app.{t}" for s, t in _edges() if _top(s) in NO_SOCKET and _top(t) == "ws"]
    assert offenders == []


def test_backend_packages_import_only_their_own_base() -> None:
    offenders = []
    for package in ("broker", "limits"):
        for path in (APP / package).glob("*.py"):
            if path.stem in ("__init__", "base"):
                continue
            for target in _runtime_imports(path):
                if _top(target) == package and target not in (f"{package}.base",):
                    offenders.append(f"app.{_module_name(path)} imports app.{target}")
    assert offenders == []


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checker itself: a handler importing the socket layer is seen."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from typing import TYPE_CHECKING\n"
        "from app.ws.subscriptions import subscribe\n"
        "if TYPE_CHECKING:\n    from app.ws.connection import Connection\n"
    )
    assert _runtime_imports(sample) == {"ws.subscriptions"}


def test_nothing_imports_the_probe_program() -> None:
    """app.probe is a program of its own (the server's runners plus the client), never a dependency."""
    offenders = [f"app.{s} imports app.{t}" for s, t in _edges() if _top(t) == "probe" and _top(s) != "probe"]
    assert offenders == []
