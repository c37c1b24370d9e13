"""Command line of the probe: flags, each with a ``WATCHPOST_PROBE_*`` environment default.

Exit status: 0 after SIGINT/SIGTERM, 2 for bad arguments or a token the server refuses,
1 when the probe stopped for another reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from app.client.errors import AuthenticationFailed, InvalidData, PermissionDenied
from app.probe.agent import Agent
from app.probe.spool import Spool, StateDirBusy

log = logging.getLogger("app.probe")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"watchpost-probe: {name} must be a whole number, got {raw!r}") from None


def parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="watchpost-probe",
        description="Run the checks of the monitors assigned to one location and report them to Watchpost.",
    )
    p.add_argument(
        "--url", default=env("WATCHPOST_PROBE_URL"), help="the server's /web URL (WATCHPOST_PROBE_URL)"
    )
    p.add_argument(
        "--token",
        default=env("WATCHPOST_PROBE_TOKEN"),
        help="an API token of role probe (WATCHPOST_PROBE_TOKEN)",
    )
    p.add_argument(
        "--location",
        default=env("WATCHPOST_PROBE_LOCATION") or None,
        help="the location name; optional, the token knows it (WATCHPOST_PROBE_LOCATION)",
    )
    p.add_argument(
        "--state-dir",
        default=env("WATCHPOST_PROBE_STATE_DIR") or "./probe-state",
        help="where the result spool lives (WATCHPOST_PROBE_STATE_DIR, default ./probe-state)",
    )
    p.add_argument(
        "--buffer",
        type=int,
        default=_env_int("WATCHPOST_PROBE_BUFFER", 100_000),
        help="results kept while the server is unreachable; the oldest are dropped beyond (default 100000)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=_env_int("WATCHPOST_PROBE_CONCURRENCY", 200),
        help="checks running at once at most (default 200)",
    )
    p.add_argument(
        "--log-level",
        default=env("WATCHPOST_PROBE_LOG_LEVEL") or "INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if not args.url:
        p.error("--url (or WATCHPOST_PROBE_URL) is required, e.g. wss://watchpost.example.com/web")
    if not args.url.startswith(("ws://", "wss://")):
        p.error(f"--url must be a ws:// or wss:// URL of the /web endpoint, got {args.url!r}")
    if not args.token:
        p.error("--token (or WATCHPOST_PROBE_TOKEN) is required: an API token of role probe")
    if args.buffer < 1:
        p.error("--buffer must be at least 1")
    if args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


async def _run(args: argparse.Namespace) -> int:
    from app import egress
    from app.settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"watchpost-probe: {exc}", file=sys.stderr)
        return 2
    # The server's check limits apply here too: CHECK_DENY_NETWORKS, CHECK_TIMEOUT_MAX, CHECK_MAX_BODY_BYTES.
    egress.install_check_policy(egress.EgressPolicy.for_checks(settings))
    spool = Spool(args.state_dir, args.buffer)
    try:
        replay = spool.open()
    except StateDirBusy as exc:
        print(f"watchpost-probe: {exc}", file=sys.stderr)
        return 2
    if replay:
        log.info("spool: %d result(s) from an earlier run will be sent first", replay)
    agent = Agent(
        args.url,
        args.token,
        spool,
        location=args.location,
        concurrency=args.concurrency,
        timeout_max=settings.check_timeout_max,
        max_body_bytes=settings.check_max_body_bytes,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except AuthenticationFailed as exc:
        log.error("the server refused the token: %s", exc)
        return 2
    except (PermissionDenied, InvalidData) as exc:
        log.error("the server refused this probe's hello (wrong token role or location?): %s", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported as the exit reason
        log.error("the probe stopped: %s", exc)
        return 1
    finally:
        spool.close()
    return 0
