"""The probe's command line: the console script, flags with environment defaults, clear refusals."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

from app.probe import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_console_script_names_the_cli_main() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["watchpost-probe"].partition(":")
    assert getattr(importlib.import_module(module), func) is cli.main


def test_flags_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHPOST_PROBE_URL", "wss://w.example/web")
    monkeypatch.setenv("WATCHPOST_PROBE_TOKEN", "wpt_x")
    monkeypatch.setenv("WATCHPOST_PROBE_LOCATION", "eu-west")
    monkeypatch.setenv("WATCHPOST_PROBE_STATE_DIR", "/var/lib/p")
    monkeypatch.setenv("WATCHPOST_PROBE_BUFFER", "500")
    args = cli.parser().parse_args([])
    assert (args.url, args.token, args.location, args.state_dir, args.buffer, args.concurrency) == (
        "wss://w.example/web", "wpt_x", "eu-west", "/var/lib/p", 500, 200,
    )  # fmt: skip
    assert cli.parser().parse_args(["--buffer", "7", "--location", "us"]).buffer == 7


def test_defaults_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("URL", "TOKEN", "LOCATION", "STATE_DIR", "BUFFER", "CONCURRENCY", "LOG_LEVEL"):
        monkeypatch.delenv(f"WATCHPOST_PROBE_{name}", raising=False)
    args = cli.parser().parse_args([])
    assert (args.location, args.state_dir, args.buffer, args.concurrency, args.log_level) == (
        None, "./probe-state", 100_000, 200, "INFO",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--token", "t"], "--url"),
        (["--url", "https://w.example/web", "--token", "t"], "ws:// or wss://"),
        (["--url", "ws://w/web"], "--token"),
        (["--url", "ws://w/web", "--token", "t", "--buffer", "0"], "--buffer"),
        (["--url", "ws://w/web", "--token", "t", "--concurrency", "0"], "--concurrency"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], needle: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("URL", "TOKEN"):
        monkeypatch.delenv(f"WATCHPOST_PROBE_{name}", raising=False)
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    assert needle in capsys.readouterr().err


def test_a_state_directory_in_use_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.probe.spool import Spool

    held = Spool(tmp_path, 10)
    held.open()
    try:
        assert cli.main(["--url", "ws://127.0.0.1:9/web", "--token", "t", "--state-dir", str(tmp_path)]) == 2
    finally:
        held.close()
    assert "another probe" in capsys.readouterr().err
