"""The probe program (``python -m app.probe``) as a subprocess the tests start, kill and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.server import ROOT


class ProbeProcess:
    """``python -m app.probe`` with a state directory that outlives it."""

    def __init__(
        self, url: str, token: str, state_dir: Path, location: str, env: dict[str, str] | None = None
    ) -> None:
        self.args = [
            sys.executable, "-m", "app.probe", "--url", url, "--token", token,
            "--location", location, "--state-dir", str(state_dir), "--log-level", "DEBUG",
        ]  # fmt: skip
        self.log_path = state_dir.parent / f"{state_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Extra environment, e.g. CHECK_DENY_NETWORKS to cut this probe off from a target.
        self.env = dict(env or {})

    def start(self) -> ProbeProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")
