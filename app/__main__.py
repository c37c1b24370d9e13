"""``python -m app [serve [--role web|collector|delivery]|migrate|rollback|create-user]``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from typing import Any

log = logging.getLogger("watchpost")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app import create_app
    from app.logs import setup_logging
    from app.settings import Settings

    overrides: dict[str, Any] = {}
    if args.role:
        from app.settings import SettingsError, parse_roles

        try:
            roles = parse_roles(args.role)
        except ValueError as exc:
            raise SettingsError(f"--role: {exc}") from None
        # Asked for on the command line: the role's component runs even where the
        # environment's COLLECTOR_ENABLED / DELIVERY_WORKERS_ENABLED would turn it off.
        overrides = {
            "roles": ",".join(sorted(roles)),
            "collector_enabled": "collector" in roles,
            "delivery_workers_enabled": "delivery" in roles,
        }
    settings = Settings.from_env(**overrides)
    setup_logging(settings.log_level, settings.log_format)
    if args.migrate:
        from app.storage.migrate import upgrade

        upgrade(settings.database_url)
    app = create_app(settings)
    # Thousands of long-lived sockets make a large heap (~1M tracked objects at 5,000
    # connections); with CPython's default thresholds, full collections of ~600 ms ran
    # every few seconds under broadcast load (make bench: fanout p99 759 -> 162 ms).
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        timeout_graceful_shutdown=int(settings.ws_drain_timeout) + 5,
        server_header=False,
        # uvicorn would trust X-Forwarded-For from 127.0.0.1 (or its own reading of
        # FORWARDED_ALLOW_IPS); app.forwarded applies our setting to HTTP and WebSocket alike.
        proxy_headers=False,
    )
    server = _make_server_class()(config, app)
    server.run()
    return 0


def _make_server_class() -> Any:
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """uvicorn.Server that drains WebSockets (1001, in-flight answered) before exiting.

        The first SIGTERM/SIGINT starts the drain; a second one exits at once.
        """

        def __init__(self, config: uvicorn.Config, app: Any) -> None:
            super().__init__(config)
            self._app = app
            self._drain_task: asyncio.Task[None] | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            hub = self._app.state.services.hub
            if self._drain_task is not None or hub.draining or not self.started:
                super().handle_exit(sig, frame)
                return
            loop = asyncio.get_event_loop()
            hub.draining = True
            self._drain_task = loop.create_task(self._drain())

        async def _drain(self) -> None:
            services = self._app.state.services
            try:
                await services.hub.drain(services.settings.ws_drain_timeout)
            finally:
                # Drained: what is still open is a peer that cannot take its close frame
                # (uvicorn would wait on its full buffers for the whole graceful timeout).
                self.config.timeout_graceful_shutdown = 2
                self.should_exit = True

    return DrainingServer


def _migrate(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.storage.migrate import upgrade

    upgrade(Settings.from_env().database_url, args.revision)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from app.settings import Settings
    from app.storage.migrate import downgrade

    downgrade(Settings.from_env().database_url, args.revision)
    return 0


def _create_user(args: argparse.Namespace) -> int:
    from app.cli import create_user

    return asyncio.run(create_user(args.username, args.password, args.tenant, args.role, args.platform_admin))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="Watchpost server")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("serve", help="run the server (default)")
    p.add_argument("--migrate", action="store_true", help="apply migrations first")
    p.add_argument(
        "--role",
        action="append",
        metavar="ROLE",
        help="run only web, collector and/or delivery (repeatable or comma-separated; default: all, "
        "or the ROLES setting)",
    )
    p.set_defaults(func=_serve)
    p = sub.add_parser("migrate", help="apply migrations up to a revision (default head)")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=_migrate)
    p = sub.add_parser("rollback", help="undo migrations down to a revision (default: one step)")
    p.add_argument("revision", nargs="?", default="-1")
    p.set_defaults(func=_rollback)
    p = sub.add_parser("create-user", help="create a local user and add it to a tenant")
    p.add_argument("username")
    p.add_argument("--password", required=True)
    p.add_argument("--tenant", default="default", help="tenant slug (created if missing)")
    p.add_argument("--role", default="viewer")
    p.add_argument("--platform-admin", action="store_true")
    p.set_defaults(func=_create_user)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        args = parser.parse_args(["serve", *(argv or [])])
    from app.settings import SettingsError

    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
