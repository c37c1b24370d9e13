"""The pure layer stays pure: its modules import no test helper that starts servers or
reaches PostgreSQL or Redis (tests/server.py, services.py, fixtures.py, ...), only each
other. `make test-fast` runs it with both services refused, which catches a test that
connects; this catches the import before anyone adds such a test."""

from __future__ import annotations

import ast
from pathlib import Path

UNIT = Path(__file__).resolve().parent


def _imported_test_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            names.update(f"{base}.{alias.name}" if base == "tests" else base for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name == "tests" or name.startswith("tests.")}


def test_the_pure_layer_imports_only_itself_from_tests() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(UNIT.glob("*.py"))
        for name in _imported_test_modules(path)
        if not name.startswith("tests.unit")
    }
    assert offenders == set(), "move the test out of tests/unit, or the helper into it"


def test_the_check_sees_a_service_backed_import(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text("import tests.services\nfrom tests import fixtures\nfrom tests.server import ok\n")
    assert _imported_test_modules(sample) == {"tests.services", "tests.fixtures", "tests.server"}
