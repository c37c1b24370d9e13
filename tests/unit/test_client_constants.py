"""The clients' wire constants are generated from app/protocol.py and cannot drift from it.

Pure tests: no server, no database.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from app import errors as server_errors
from app.client import errors as client_errors
from app.devtools import client_constants, protocol_docs
from app.protocol import CloseCode, PkgID, RSPCode

ROOT = Path(__file__).resolve().parents[2]
JS = ROOT / "app" / "dashboard" / "static" / "wp-client.js"
PY = ROOT / "app" / "client" / "constants.py"


def test_committed_python_constants_match_a_fresh_generation() -> None:
    assert PY.read_text() == client_constants.render_python(), (
        "app/client/constants.py is stale: run `make ws-docs` and commit the result"
    )


def test_committed_js_constants_match_a_fresh_generation() -> None:
    current = JS.read_text()
    assert current == client_constants.render_js(current), (
        "the generated block of wp-client.js is stale: run `make ws-docs` and commit the result"
    )


def test_js_block_holds_every_code_of_the_registry() -> None:
    text = JS.read_text()
    block = text.split(client_constants.JS_BEGIN, 1)[1].split(client_constants.JS_END, 1)[0]
    for enum_cls, js_name in ((PkgID, "Pkg"), (RSPCode, "RSP"), (CloseCode, "Close")):
        # Defined in the generated block and nowhere else in the module.
        assert text.count(f"export const {js_name} =") == 1, js_name
        body = block.split(f"export const {js_name} = Object.freeze({{", 1)[1].split("});", 1)[0]
        found = {name: int(value) for name, value in re.findall(r"(\w+): (\d+),", body)}
        assert found == {m.name: int(m) for m in enum_cls}, js_name


def test_the_python_client_uses_the_generated_enums() -> None:
    from app.client import CloseCode as ClientClose
    from app.client import PkgID as ClientPkg
    from app.client import RSPCode as ClientRSP

    for ours, theirs in ((ClientPkg, PkgID), (ClientRSP, RSPCode), (ClientClose, CloseCode)):
        assert ours.__module__ == "app.client.constants"
        assert {m.name: int(m) for m in ours} == {m.name: int(m) for m in theirs}


def test_ws_docs_check_passes_on_the_committed_tree() -> None:
    assert protocol_docs.main(["--check"]) == 0


def test_a_hand_edited_block_is_put_back() -> None:
    current = JS.read_text()
    edited = current.replace("  WHOAMI: 2,", "  WHOAMI: 22,", 1)
    assert edited != current
    assert client_constants.render_js(edited) == current


def test_lost_markers_are_reported_not_guessed() -> None:
    text = JS.read_text().replace(client_constants.JS_END, "// the end")
    with pytest.raises(client_constants.GeneratedBlockMissing, match="has no generated block"):
        client_constants.render_js(text)


def test_every_status_has_its_own_client_error() -> None:
    for code in RSPCode:
        if code is RSPCode.OK:
            continue
        exc = client_errors.error_from_response({"status_code": int(code), "data": {"msg": "m"}})
        assert exc.status_code == code, code
        assert type(exc) is not client_errors.ServerError or code is RSPCode.ERROR, code


def test_client_errors_mirror_the_servers_error_tree() -> None:
    """A server exception and the client's one for the same status carry the same name."""
    server_classes = [
        cls
        for cls in vars(server_errors).values()
        if isinstance(cls, type) and issubclass(cls, server_errors.WatchpostError)
    ]
    assert len(server_classes) > 5
    for cls in server_classes:
        exc = client_errors.error_from_response({"status_code": int(cls.code), "data": {"msg": "m"}})
        expected = "ServerError" if cls.code is RSPCode.ERROR else cls.__name__
        assert type(exc).__name__ == expected, cls


def test_the_client_imports_nothing_from_the_server() -> None:
    for path in sorted((ROOT / "app" / "client").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert name == "app.client" or name.startswith("app.client.") or not name.startswith("app"), (
                    f"{path.name} imports {name}"
                )
