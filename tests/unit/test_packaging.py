"""What ships: the wheel and the image carry the server, not the dev-only tools."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_namespace_packages

ROOT = Path(__file__).resolve().parents[2]
DEV_ONLY = ("app.bench", "app.devtools")


def _shipped_packages() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    # pyproject-configured discovery includes namespace packages (folders without __init__.py).
    return find_namespace_packages(str(ROOT), include=config["include"], exclude=config.get("exclude", ()))


def test_the_wheel_carries_the_server_but_no_dev_only_package() -> None:
    shipped = _shipped_packages()
    assert {"app", "app.handlers", "app.ws", "app.monitoring", "app.alerting", "app.auth"} <= set(shipped)
    assert [p for p in shipped if p.startswith(DEV_ONLY)] == []


def test_the_image_leaves_out_the_dev_only_folders() -> None:
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for package in DEV_ONLY:
        assert package.replace(".", "/") in ignored


def test_the_server_never_imports_dev_only_code() -> None:
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if rel.parts[:2] in (("app", "bench"), ("app", "devtools")):
            continue
        text = path.read_text()
        if any(f"import {p}" in text or f"from {p}" in text for p in DEV_ONLY):
            offenders.append(str(rel))
    assert offenders == []
