"""`make new-ws-handlers` in a temporary copy of the repository: the generated package imports,
registers, passes ruff and mypy, and its own generated test passes unedited over a real socket;
every refusal leaves the copy byte-identical."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devtools import pkg_ids, scaffold

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
_CACHE_DIRS = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
#: Make's install stamp in the copy: older prerequisites never trigger `pip install` there.
_STAMP = ".scaffold-test-stamp"


def _copy_repository(dest: Path) -> Path:
    """Tracked and untracked (not ignored) files of the working tree, without the virtualenv."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if rel.startswith(".venv/") or not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    (dest / _STAMP).touch()
    # A warm mypy cache saves ~10 s; a cache miss only costs time, so copy failures are ignored.
    if (ROOT / ".mypy_cache").is_dir():
        with contextlib.suppress(OSError, shutil.Error):
            shutil.copytree(ROOT / ".mypy_cache", dest / ".mypy_cache", dirs_exist_ok=True)
    return dest


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _CACHE_DIRS.intersection(path.relative_to(root).parts):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _env(root: Path) -> dict[str, str]:
    """Run the copy's code, never the original tree's (the server subprocess inherits this)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(root: Path, *cmd: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        cwd=root,
        env=_env(root),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _make(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _run(
        root,
        "make",
        "--no-print-directory",
        "-o",
        _STAMP,
        f"STAMP={_STAMP}",
        f"VENV={VENV_BIN.parent}",
        *args,
    )


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs see a non-terminal stdin even under `pytest -s` in a terminal (no prompts)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield _copy_repository(tmp_path_factory.mktemp("repo"))


@pytest.mark.slow
@pytest.mark.timeout(300)  # two real servers start in the copy; a loaded machine needs headroom
def test_generated_package_imports_checks_and_passes_its_own_test(repo_copy: Path) -> None:
    before = _tree_hashes(repo_copy)
    made = _make(
        repo_copy, "new-ws-handlers", "name=device_list", "pkg_id=150", "role=editor", "module=devices"
    )
    assert made.returncode == 0, made.stderr + made.stdout
    # A second package into the same module: appended, pkg_id defaulted to the next free id.
    again = _make(repo_copy, "new-ws-handlers", "name=device_get", "role=viewer", "module=devices")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "DEVICE_GET = 151" in again.stdout

    after = _tree_hashes(repo_copy)
    changed = {p for p in before.keys() & after.keys() if before[p] != after[p]}
    assert changed == {"app/protocol.py", "actions.json"}
    assert set(after) - set(before) == {
        "app/handlers/devices.py",
        "tests/test_devices_device_list.py",
        "tests/test_devices_device_get.py",
    }
    assert not set(before) - set(after)

    protocol = (repo_copy / "app/protocol.py").read_text()
    assert "    MONITOR_EXPORT = 109\n    DEVICE_LIST = 150\n    DEVICE_GET = 151\n" in protocol
    actions = (repo_copy / "actions.json").read_text()
    assert (
        '    "109": "viewer",\n    "150": "editor",\n    "151": "viewer",\n    "200": "viewer",\n' in actions
    )
    module = (repo_copy / "app/handlers/devices.py").read_text()
    assert module.index("async def device_list(") < module.index("async def device_get(")

    imported = _run(
        repo_copy,
        sys.executable,
        "-c",
        "import app, os\n"
        "from app.handlers import build_router\n"
        "assert app.__file__.startswith(os.getcwd()), app.__file__\n"
        "app.create_app()  # fails closed if a registered package has no actions.json entry\n"
        "specs = build_router().specs\n"
        "print(specs[150].name, specs[151].name, specs[150].handler.__module__)\n",
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == ["DEVICE_LIST", "DEVICE_GET", "app.handlers.devices"]

    generated = [
        "app/handlers/devices.py",
        "app/protocol.py",
        "tests/test_devices_device_list.py",
        "tests/test_devices_device_get.py",
    ]
    bin_ = str(VENV_BIN)
    for cmd in (
        [f"{bin_}/ruff", "format", "--check", *generated],
        [f"{bin_}/ruff", "check", *generated],
        # Strict mypy (pyproject) on the generated module; imported modules are checked on main.
        [f"{bin_}/mypy", "--follow-imports=silent", "app/handlers/devices.py", "app/protocol.py"],
    ):
        checked = _run(repo_copy, *cmd)
        assert checked.returncode == 0, f"{cmd}:\n{checked.stdout}{checked.stderr}"

    docs = _make(repo_copy, "ws-docs")
    assert docs.returncode == 0, docs.stderr
    reference = (repo_copy / "docs" / "packages.md").read_text()
    section = reference.split("\n### 150 DEVICE_LIST\n", 1)[1].split("\n### ", 1)[0]
    assert "- role: `editor` or higher" in section and "`app.handlers.devices:device_list`" in section
    assert '"data": {"package": "DEVICE_LIST", "echo": "hello"}' in section

    table = _make(repo_copy, "ws-handlers")
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.lstrip().startswith("150 "))
    assert row.split() == ["150", "DEVICE_LIST", "app.handlers.devices:device_list", "editor", "echo"]

    tests = _run(
        repo_copy,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_devices_device_list.py",
        "tests/test_devices_device_get.py",
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    # device_list (editor) also checks a viewer is refused; device_get (lowest role) cannot.
    assert tests.stdout.strip().splitlines()[-1].startswith("10 passed"), tests.stdout[-2000:]


def _refuse(root: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    before = _tree_hashes(root)
    status = scaffold.main([*argv, "--root", str(root)])
    err = capsys.readouterr().err
    assert status != 0, err
    assert _tree_hashes(root) == before, "a refused scaffold changed files"
    return err


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    for rel in ("app/protocol.py", "actions.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, root / rel)
    shutil.copytree(ROOT / "handlers_templates", root / "handlers_templates")
    shutil.copytree(
        ROOT / "app" / "handlers", root / "app" / "handlers", ignore=shutil.ignore_patterns("__pycache__")
    )
    (root / "tests").mkdir()
    (root / "tests" / "test_alerting_backoff.py").write_text("# an existing test module\n")
    return root


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--name", "token_create", "--role", "admin", "--module", "apitokens"],
            "PkgID.TOKEN_CREATE = 700 already",
        ),
        (
            ["--name", "token_rotate", "--pkg-id", "700", "--role", "admin", "--module", "apitokens"],
            "taken by",
        ),
        (
            ["--name", "device_list", "--pkg-id", "0", "--role", "viewer", "--module", "devices"],
            "outside 1-899",
        ),
        (
            ["--name", "device_list", "--pkg-id", "900", "--role", "viewer", "--module", "devices"],
            "outside 1-899",
        ),
        (["--name", "device_list", "--pkg-id", "150", "--role", "root", "--module", "devices"], "not a role"),
        (
            ["--name", "Device-List", "--pkg-id", "150", "--role", "viewer", "--module", "devices"],
            "identifier",
        ),
        (["--name", "class", "--pkg-id", "150", "--role", "viewer", "--module", "devices"], "identifier"),
        (
            ["--name", "device_list", "--pkg-id", "150", "--role", "viewer", "--module", "2devices"],
            "identifier",
        ),
        (
            ["--name", "device_list", "--pkg-id", "150", "--role", "viewer", "--module", "_devices"],
            "not discovered",
        ),
        (
            ["--name", "token_rotate", "--pkg-id", "703", "--role", "admin", "--module", "tokens"],
            "never rewritten",
        ),
        (["--name", "backoff", "--role", "editor", "--module", "alerting"], "would be overwritten"),
        (["--name", "device_list", "--role", "viewer", "--module", "devices"], "pass pkg_id="),
        (
            ["--name", "device_list", "--pkg-id", "x", "--role", "viewer", "--module", "devices"],
            "not an integer",
        ),
        (["--name", "device_list"], "missing role, module"),
    ],
)
def test_refusals_leave_the_tree_byte_identical(
    pristine: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    err = _refuse(pristine, argv, capsys)
    assert needle in err, err


def test_refusal_lists_every_problem_at_once(pristine: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _refuse(
        pristine, ["--name", "ping", "--pkg-id", "1", "--role", "root", "--module", "system"], capsys
    )
    assert "PkgID.PING = 1 already exists" in err and "not a role" in err and "taken by PkgID.PING" in err


@pytest.mark.parametrize(
    ("name", "module", "expected"),
    [
        ("token_rotate", "apitokens", 703),  # after the TOKEN_* family
        ("tenant_delete", "orgs", 714),  # after the TENANT_* family
        ("audit_export", "audit", 801),  # after the AUDIT_* family
        (
            "group_list",
            "groups",
            616,
        ),  # by keyword: the block's first free id (status pages 600-609, probes 610-615)
        ("device_list", "system", 7),  # after the module's highest id
    ],
)
def test_default_pkg_id_is_the_next_free_id_of_the_range(
    pristine: Path, name: str, module: str, expected: int
) -> None:
    assert pkg_ids.default_pkg_id(pkg_ids.Tree.read(pristine), name, module)[0] == expected


def test_interactive_prompts_fill_missing_arguments_with_defaults(pristine: Path) -> None:
    answers = iter(["group_list", "groups", "", ""])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    args = scaffold._parse_args(["--root", str(pristine)])
    scaffold._complete_interactively(args, ask)
    assert (args.name, args.module, args.role, args.pkg_id) == ("group_list", "groups", "viewer", "616")
    assert prompts[-1] == "pkg_id (the 600-699 range of 'groups' (docs/protocol.md)) [616]: "
    planned = scaffold.plan(
        pristine, name=args.name, module=args.module, role=args.role, pkg_id=int(args.pkg_id)
    )
    assert set(planned.writes) == {
        "app/protocol.py",
        "actions.json",
        "app/handlers/groups.py",
        "tests/test_groups_group_list.py",
    }


def test_terminal_session_prompts_for_missing_arguments(pristine: Path, tmp_path: Path) -> None:
    """A real pseudo-terminal on stdin: the scaffold asks, offers the next free id, and writes."""
    root = tmp_path / "tree"
    shutil.copytree(pristine, root)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.devtools.scaffold", "--role", "viewer", "--root", str(root)],
            cwd=ROOT,
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        os.write(controller, b"group_list\ngroups\n\n")  # name, module, pkg_id (accept the default)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0, err
    assert "[616]: " in out
    assert "GROUP_LIST = 616" in (root / "app" / "protocol.py").read_text()
    assert (root / "app" / "handlers" / "groups.py").exists()


def test_appending_to_a_scaffolded_module_never_breaks_it(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "tree"
    shutil.copytree(pristine, root)
    assert (
        scaffold.main(
            [
                "--name",
                "device_list",
                "--pkg-id",
                "150",
                "--role",
                "viewer",
                "--module",
                "devices",
                "--root",
                str(root),
            ]
        )
        == 0
    )
    module = root / "app" / "handlers" / "devices.py"
    original = module.read_text()
    module.write_text(original + "\n\ndef device_get() -> None:\n    pass\n")
    err = _refuse(root, ["--name", "device_get", "--role", "viewer", "--module", "devices"], capsys)
    assert "already defines ['device_get']" in err
    module.write_text(original.replace("from typing import Any\n", ""))
    err = _refuse(root, ["--name", "device_put", "--role", "viewer", "--module", "devices"], capsys)
    assert "no longer defines or imports ['Any']" in err
    module.write_text(original)
    assert (
        scaffold.main(
            ["--name", "device_put", "--role", "viewer", "--module", "devices", "--root", str(root)]
        )
        == 0
    )
    appended = module.read_text()
    assert appended.startswith(original) and "PkgID.DEVICE_PUT" in appended
    assert "DEVICE_PUT = 151" in (root / "app" / "protocol.py").read_text()
