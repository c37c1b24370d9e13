"""actions.json loading and the fail-closed start-up check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.handlers import build_router
from app.protocol import PkgID
from app.rbac import RBACConfigError, load_policy


def test_every_registered_package_has_an_entry() -> None:
    policy = load_policy()
    policy.check_registry(build_router().specs)


def test_role_ladder() -> None:
    policy = load_policy()
    assert policy.allows(1, "viewer")
    assert not policy.allows(100, "viewer")
    assert policy.allows(100, "editor") and policy.allows(100, "owner")
    assert not policy.allows(700, "editor")
    assert not policy.allows(4, None)
    assert not policy.allows(99999, "owner")


def test_session_packages_need_no_tenant_role() -> None:
    policy = load_policy()
    for pkg_id in (PkgID.PING, PkgID.WHOAMI, PkgID.AUTH_REFRESH, PkgID.TENANT_LIST, PkgID.TENANT_CREATE):
        assert policy.allows(pkg_id, None), pkg_id
    assert not policy.allows(PkgID.SUBSCRIBE, None)
    assert not policy.allows(PkgID.TENANT_GET, None)


def test_missing_entry_fails_closed(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["1"]
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RBACConfigError, match=r"\[1\]"):
        load_policy(path).check_registry(build_router().specs)


def test_unknown_role_is_refused(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    raw["ws"]["1"] = "superuser"
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(RBACConfigError, match="unknown role 'superuser'"):
        load_policy(path)


def test_server_refuses_to_start_without_entry(tmp_path: Path) -> None:
    import subprocess
    import sys

    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["2"]
    (tmp_path / "actions.json").write_text(json.dumps(raw))
    path = str(tmp_path / "actions.json")
    code = (
        f"import app.rbac as r, pathlib; r.DEFAULT_PATH = pathlib.Path({path!r});"
        "from app import create_app; from app.settings import Settings;"
        "create_app(Settings.from_env(env={}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "no 'ws' entry for registered package ids [2]" in proc.stderr


def test_server_refuses_to_start_with_actions_path_missing_an_entry(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    raw = json.loads(Path("actions.json").read_text())
    del raw["ws"]["3"]
    path = tmp_path / "roles.json"
    path.write_text(json.dumps(raw))
    code = "from app import create_app; from app.settings import Settings; create_app(Settings.from_env())"
    env = {**os.environ, "ACTIONS_PATH": str(path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "no 'ws' entry for registered package ids [3]" in proc.stderr


def _write(tmp_path: Path, raw: dict[str, object]) -> Path:
    path = tmp_path / "actions.json"
    path.write_text(json.dumps(raw))
    return path


def test_topic_roles_come_from_actions_json(tmp_path: Path) -> None:
    policy = load_policy()
    assert policy.topic_role("monitors") == "viewer"
    assert policy.topic_role("deliveries") == "editor"
    raw = json.loads(Path("actions.json").read_text())
    raw["topics"]["deliveries"] = "admin"
    raw["topics"]["status.{id}"] = "owner"
    changed = load_policy(_write(tmp_path, raw))
    assert changed.topic_role("deliveries") == "admin"
    assert changed.topic_role("status.7") == "owner"
    assert policy.topic_role("status.7") is None


def test_topic_id_placeholder_matches_object_ids_only() -> None:
    policy = load_policy()
    for name in ("monitor.1", "monitor.42", "monitor.9223372036854775807"):
        assert policy.topic_role(name) == "viewer", name
    for name in (
        "monitor.0",
        "monitor.01",
        "monitor.x",
        "monitor.1.2",
        "monitor.",
        "monitors.1",
        "monitor.1 ",
    ):
        assert policy.topic_role(name) is None, name
    assert policy.topic_role("monitor." + "1" * 20) is None  # longer than any 64-bit id


@pytest.mark.parametrize("name", ["monitor.*", "monitor.[0-9]+", "Monitors", "a..b", "monitor.{name}", ""])
def test_topic_templates_are_names_not_patterns(tmp_path: Path, name: str) -> None:
    raw = json.loads(Path("actions.json").read_text())
    raw["topics"][name] = "viewer"
    with pytest.raises(RBACConfigError, match="is not a topic name"):
        load_policy(_write(tmp_path, raw))


def test_topics_section_is_required_and_checked(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    raw["topics"]["monitors"] = "superuser"
    with pytest.raises(RBACConfigError, match="topic 'monitors' names unknown role 'superuser'"):
        load_policy(_write(tmp_path, raw))
    del raw["topics"]
    with pytest.raises(RBACConfigError, match="'topics' must map each subscribable topic"):
        load_policy(_write(tmp_path, raw))


def test_an_http_section_is_refused_not_ignored(tmp_path: Path) -> None:
    raw = json.loads(Path("actions.json").read_text())
    raw["http"] = {"/metrics": {"GET": "admin"}}
    with pytest.raises(RBACConfigError, match="'http' section is not read: HTTP routes are public"):
        load_policy(_write(tmp_path, raw))
    del raw["http"]
    raw["topic"] = {}
    with pytest.raises(RBACConfigError, match=r"unknown sections \['topic'\]"):
        load_policy(_write(tmp_path, raw))


def test_allowed_packages_is_the_routers_answer() -> None:
    policy = load_policy()
    specs = build_router().specs
    viewer = policy.allowed_packages("viewer", specs)
    assert PkgID.MONITOR_GET in viewer and PkgID.SUBSCRIBE in viewer
    assert PkgID.MONITOR_CREATE not in viewer and PkgID.TOKEN_CREATE not in viewer
    assert viewer == sorted(viewer)
    for role in (None, *policy.roles):
        assert policy.allowed_packages(role, specs) == [p for p in sorted(specs) if policy.allows(p, role)]
    assert policy.allowed_packages(None, specs) == sorted(
        p for p, needed in policy.ws.items() if needed == "authenticated" and p in specs
    )


def _role_literals(path: Path, roles: set[str]) -> list[str]:
    """String constants in ``path`` that are role names, outside ``response_example=`` (docs)."""
    import ast

    tree = ast.parse(path.read_text())
    examples = {
        id(node)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        for kw in call.keywords
        if kw.arg == "response_example"
        for node in ast.walk(kw.value)
    }
    return [
        f"{path}:{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in roles and id(node) not in examples
    ]


def test_no_role_rule_is_written_outside_actions_json() -> None:
    """Package, topic and field rules name no role in code: they ask the policy."""
    import re

    roles = set(load_policy().roles)
    app = Path("app")
    python = [*app.glob("handlers/*.py"), *app.glob("ws/*.py"), *app.glob("monitoring/*.py")]
    python += [*app.glob("alerting/*.py"), app / "events.py", app / "routing.py"]
    found = [hit for path in sorted(python) for hit in _role_literals(path, roles)]
    names = "|".join(sorted(roles))
    quoted = re.compile("[\"'`](" + names + ")[\"'`]")
    for path in sorted(app.glob("dashboard/static/*.js")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if quoted.search(line):
                found.append(f"{path}:{lineno} {line.strip()}")
    assert found == []
