"""Operator CLI on top of :class:`WatchpostClient`.

    python -m app.client login --username alice            # prints an access token
    export WATCHPOST_TOKEN=...
    python -m app.client call 1                              # PING
    python -m app.client call MONITOR_LIST '{"page": 1}' --meta
    python -m app.client subscribe monitors incidents        # JSON lines until Ctrl-C
    python -m app.client export --format yaml > monitors.yaml  # the fleet definition
    python -m app.client import monitors.yaml --dry-run      # the diff, nothing changed
    python -m app.client import monitors.yaml --delete-missing

Exit codes: 0 success; 1 the server answered with an error status (or refused
the login); 2 bad command line or JSON; 3 cannot connect, authentication
refused, connection lost or no answer in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from app.client.client import WatchpostClient
from app.client.constants import PkgID, RSPCode
from app.client.errors import ConnectionLost, RequestTimeout, WatchpostError
from app.client.fleet import FleetFileError, dump_fleet, export_monitors, import_monitors, parse_fleet
from app.client.subscription import Event, Resync

DEFAULT_URL = "ws://127.0.0.1:8000/web"

EXIT_OK, EXIT_ERROR_ANSWER, EXIT_USAGE, EXIT_CONNECTION = 0, 1, 2, 3


class UsageError(Exception):
    """A command-line problem; the message says how to fix it."""


def parse_pkg_id(text: str) -> int:
    """``1``, ``PING`` or ``monitor_list`` -> the numeric package id."""
    if text.isdigit():
        return int(text)
    try:
        return int(PkgID[text.upper()])
    except KeyError:
        raise UsageError(
            f"unknown package {text!r}: give a number or a name such as PING, MONITOR_LIST"
        ) from None


def parse_data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(
            f"the data argument is not valid JSON ({exc}); quote it like '{{\"page\": 1}}'"
        ) from None
    if not isinstance(value, dict):
        raise UsageError("the data argument must be a JSON object, e.g. '{}'")
    return value


def parse_since(pairs: list[str]) -> dict[str, int]:
    since: dict[str, int] = {}
    for pair in pairs:
        topic, _, seq = pair.rpartition("=")
        if not topic or not seq.isdigit():
            raise UsageError(f"--since expects TOPIC=SEQ (e.g. monitors=120), got {pair!r}")
        since[topic] = int(seq)
    return since


def http_base(url: str) -> str:
    """The HTTP origin of a ``ws(s)://host/web`` URL."""
    parts = urlsplit(url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _dump(value: Any) -> str:
    option = orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS).decode()


def _connection_options(parser: argparse.ArgumentParser, timeout: float = 10.0) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("WATCHPOST_URL", DEFAULT_URL),
        help="WebSocket URL (env WATCHPOST_URL)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("WATCHPOST_TOKEN"), help="access or API token (env WATCHPOST_TOKEN)"
    )
    parser.add_argument(
        "--tenant", default=os.environ.get("WATCHPOST_TENANT"), help="tenant slug (env WATCHPOST_TENANT)"
    )
    parser.add_argument("--timeout", type=float, default=timeout, help="seconds to wait for an answer")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.client",
        description="Talk to a Watchpost server over its WebSocket API.",
        epilog="exit codes: 0 success; 1 the server answered an error; 2 bad arguments or JSON; "
        "3 cannot connect, authentication refused, connection lost or no answer in time",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    call = commands.add_parser("call", help="send one request and print the answer's data as JSON")
    call.add_argument("pkg_id", help="package id or name, e.g. 1, PING, MONITOR_LIST")
    call.add_argument("data", nargs="?", help="request data as a JSON object (default {})")
    call.add_argument("--meta", action="store_true", help='print {"data": ..., "meta": ...} (pagination)')
    _connection_options(call)

    sub = commands.add_parser("subscribe", help="print events of the given topics as JSON lines")
    sub.add_argument("topics", nargs="+", help="topics, e.g. monitors incidents monitor.12")
    sub.add_argument("--since", action="append", default=[], metavar="TOPIC=SEQ", help="resume after SEQ")
    _connection_options(sub)

    imp = commands.add_parser(
        "import", help="apply a fleet file (YAML or JSON) by monitor name; prints the diff as JSON"
    )
    imp.add_argument("file", help="monitors.yaml, monitors.json, or - for JSON on stdin")
    imp.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    imp.add_argument(
        "--delete-missing", action="store_true", help="delete this tenant's monitors the file does not name"
    )
    imp.add_argument("--format", choices=["yaml", "json"], help="file format (default: from the extension)")
    _connection_options(imp, timeout=60.0)

    exp = commands.add_parser("export", help="print the tenant's monitors as a fleet file")
    exp.add_argument("--format", choices=["yaml", "json"], default="json")
    _connection_options(exp, timeout=60.0)

    login = commands.add_parser("login", help="log in over HTTP and print an access token")
    login.add_argument("--username", required=True)
    login.add_argument("--password", help="password (env WATCHPOST_PASSWORD; prompted when missing)")
    login.add_argument("--base", help="HTTP base URL (env WATCHPOST_BASE; default: derived from --url)")
    login.add_argument("--url", default=os.environ.get("WATCHPOST_URL", DEFAULT_URL), help=argparse.SUPPRESS)
    login.add_argument("--timeout", type=float, default=10.0)
    return parser


async def run_call(args: argparse.Namespace) -> int:
    pkg_id, data = parse_pkg_id(args.pkg_id), parse_data(args.data)
    async with _client(args, reconnect=False) as client:
        answer = await client.call_full(pkg_id, data, timeout=args.timeout)
    print(_dump({"data": answer.data, "meta": answer.meta} if args.meta else answer.data))
    return EXIT_OK


async def run_subscribe(args: argparse.Namespace) -> int:
    since = parse_since(args.since)
    async with _client(args, reconnect=True) as client, client.subscribe(args.topics, since=since) as events:
        async for item in events:
            if isinstance(item, Event):
                line = {"topic": item.topic, "seq": item.seq, "pkg_id": item.pkg_id, "data": item.data}
            elif isinstance(item, Resync):
                line = {
                    "resync": True,
                    "topic": item.topic,
                    "current_seq": item.current_seq,
                    "reason": item.reason,
                }
            print(orjson.dumps(line).decode(), flush=True)
    return EXIT_OK


def read_fleet_file(path: str, fmt: str | None) -> list[dict[str, Any]]:
    """The rows of a fleet file; the format comes from the extension unless given."""
    fmt = fmt or ("yaml" if path.lower().endswith((".yaml", ".yml")) else "json")
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return parse_fleet(text, yaml_format=fmt == "yaml")
    except FleetFileError as exc:
        raise UsageError(f"{path}: {exc}") from None


async def run_import(args: argparse.Namespace) -> int:
    rows = read_fleet_file(args.file, args.format)
    async with _client(args, reconnect=False) as client:
        answer = await import_monitors(
            client, rows, dry_run=args.dry_run, delete_missing=args.delete_missing, timeout=args.timeout
        )
    print(_dump(answer))
    return EXIT_OK


async def run_export(args: argparse.Namespace) -> int:
    async with _client(args, reconnect=False) as client:
        rows = await export_monitors(client, timeout=args.timeout)
    sys.stdout.write(dump_fleet(rows, yaml_format=args.format == "yaml"))
    return EXIT_OK


def _client(args: argparse.Namespace, *, reconnect: bool) -> WatchpostClient:
    if not args.token:
        raise UsageError(
            "no token: pass --token or set WATCHPOST_TOKEN (get one with `python -m app.client login`)"
        )
    return WatchpostClient(
        args.url, args.token, tenant=args.tenant, request_timeout=args.timeout, reconnect=reconnect
    )


def run_login(args: argparse.Namespace) -> int:
    base = args.base or os.environ.get("WATCHPOST_BASE") or http_base(args.url)
    password = args.password or os.environ.get("WATCHPOST_PASSWORD") or getpass.getpass("password: ")
    try:
        reply = httpx.post(
            f"{base.rstrip('/')}/login",
            json={"username": args.username, "password": password},
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {base}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    try:
        body = reply.json()
    except ValueError:
        body = {}
    if reply.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
        detail = (
            body.get("msg") or body.get("detail") or body.get("error") if isinstance(body, dict) else None
        )
        print(
            f"error: login failed with HTTP {reply.status_code}: {detail or reply.text[:200]}",
            file=sys.stderr,
        )
        return EXIT_ERROR_ANSWER
    print(body["access_token"])
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "login":
            return run_login(args)
        runners = {"call": run_call, "subscribe": run_subscribe, "import": run_import, "export": run_export}
        return asyncio.run(runners[args.command](args))
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ConnectionLost, RequestTimeout) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except WatchpostError as exc:
        code = exc.status_code
        name = RSPCode(code).name if code is not None and code in RSPCode._value2member_map_ else "ERROR"
        print(f"error: {name} ({code}): {exc}", file=sys.stderr)
        if exc.data is not None:
            print(_dump(exc.data), file=sys.stderr)
        return EXIT_ERROR_ANSWER
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            sys.stderr.write("\n")
        return EXIT_OK
