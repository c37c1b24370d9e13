"""Watchpost: a WebSocket-first, package-routed realtime server for live health monitoring.

:func:`create_app` is the only place that wires things together.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.types import ASGIApp, Receive, Scope, Send

    from app.context import Services
    from app.settings import Settings

__version__ = "0.1.0"

log = logging.getLogger("watchpost")


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the Starlette app from settings (default: the environment)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
    from starlette.staticfiles import StaticFiles

    from app import egress, http, metrics, status_http
    from app.auth.authenticator import Authenticator
    from app.auth.credential_cache import CredentialCache
    from app.auth.local import LocalAuth
    from app.broker import create_broker
    from app.context import Services
    from app.events import EventBus
    from app.forwarded import ForwardedMiddleware
    from app.handlers import build_router
    from app.limits import create_limiter
    from app.rbac import load_policy
    from app.settings import Settings, parse_networks
    from app.storage.db import Database
    from app.ws.endpoint import web_asgi, websocket_endpoint
    from app.ws.hub import Hub

    settings = settings or Settings.from_env()
    # Check runners (collector, CHECK_NOW) take the CHECK_DENY_NETWORKS policy from here.
    egress.install_check_policy(egress.EgressPolicy.for_checks(settings))
    # Ping monitors take the CHECK_PING choice of ICMP sockets from here, for the same reason.
    from app.monitoring.kinds import ping

    ping.install_mode(settings.check_ping)
    policy = load_policy(settings.actions_path)
    router = build_router()
    policy.check_registry(router.specs)  # fail closed: every package needs an actions.json entry
    router.policy = policy
    router.on_handled = metrics.observe_processing
    broker = create_broker(
        settings.redis_url,
        prefix=settings.redis_prefix,
        history_size=settings.event_history_size,
        history_ttl=float(settings.event_history_ttl),
        max_connections=settings.redis_max_connections,
        pool_timeout=settings.redis_pool_timeout,
    )
    limiter = create_limiter(
        settings.redis_url,
        prefix=settings.redis_prefix,
        message_rate_per_minute=settings.ws_message_rate_limit,
        max_connections_per_user=settings.ws_max_connections_per_user,
        http_per_minute=settings.rate_limit_per_minute,
        http_burst=settings.rate_limit_burst,
        fail_open=settings.limits_fail_open,
        max_connections=settings.redis_max_connections,
        pool_timeout=settings.redis_pool_timeout,
        on_redis_error=lambda op: metrics.REDIS_ERRORS.labels(component=f"limits_{op}").inc(),
    )
    db = Database(settings.database_url)
    local_auth = LocalAuth(settings, db)  # key loaded in the lifespan
    # Shared by the authenticator (fills it) and the hub (empties it on control messages).
    credentials = CredentialCache(settings.auth_cache_ttl)
    services = Services(
        settings=settings,
        db=db,
        policy=policy,
        router=router,
        broker=broker,
        events=EventBus(broker),
        limiter=limiter,
        local_auth=local_auth,
        authenticator=Authenticator(db, local_auth, policy, cache=credentials),
        hub=Hub(broker, policy, credentials),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        from app.bootstrap import bootstrap_admin

        metrics.set_app_info(__version__, settings.environment)
        await local_auth.load_key()
        await bootstrap_admin(services)
        await broker.start()
        await limiter.start()
        services.hub.start()
        await _start_components(services)
        log.info(
            "watchpost %s ready (database=%s, broker=%s, roles=%s)",
            __version__,
            "sqlite" if db.is_sqlite else "postgresql",
            "redis" if settings.redis_url else "in-process",
            ",".join(sorted(settings.role_set)),
        )
        try:
            yield
        finally:
            # Shutdown in labelled steps: drain sockets (if the signal handler has not),
            # stop background work, then close Redis and the database.
            if not services.hub.draining:
                await services.hub.drain(settings.ws_drain_timeout)
            await _stop_components(services)
            services.hub.stop()
            await limiter.close()
            await broker.close()
            await db.close()
            log.info("shutdown complete")

    routes: list[BaseRoute] = [
        Route("/health", http.health, methods=["GET"]),
        Route("/health/ready", http.ready, methods=["GET"]),
        Route("/metrics", http.metrics_endpoint, methods=["GET"]),
    ]
    if "web" in settings.role_set:
        # Without the web role (a collector or delivery process) only health and metrics
        # are served: no socket, no login, no pages.
        routes += [
            Route("/", http.dashboard, methods=["GET"]),
            Route("/login", http.login, methods=["POST"]),
            Route("/refresh", http.refresh, methods=["POST"]),
            Route("/logout", http.logout, methods=["POST"]),
            Route("/hooks/pagerduty/{channel}", http.pagerduty_hook, methods=["POST"]),
            Route("/status/{slug}", status_http.status_page, methods=["GET"]),
            Route("/badge/{slug}/{monitor}/{kind}.svg", status_http.badge, methods=["GET"]),
            WebSocketRoute("/web", websocket_endpoint),
            Mount(
                "/static",
                app=StaticFiles(directory=str(http.DASHBOARD_DIR / "static"), check_dir=False),
                name="static",
            ),
        ]
    trusted = parse_networks(settings.forwarded_allow_ips, allow_any=True)
    middleware = [
        Middleware(ForwardedMiddleware, trusted=trusted),
        Middleware(http.HTTPMetricsMiddleware),
    ]
    # The direct /web path only where the web role serves sockets at all.
    app_class = (
        _with_direct_socket(Starlette, ForwardedMiddleware(web_asgi, trusted=trusted))
        if "web" in settings.role_set
        else Starlette
    )
    app = app_class(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.services = services
    return app


def _with_direct_socket(base: type[Starlette], web: ASGIApp) -> type[Starlette]:
    """Starlette, except that a WebSocket to ``/web`` goes straight to ``web``.

    Every ASGI layer a socket passes through (error and exception middleware, our two
    middlewares, the router, the route's session and exception wrappers) keeps its
    coroutine frame for as long as the socket is open: about 1.5 KiB per connection,
    held by thousands of idle dashboards (make bench, idle scenario; docs/bench/idle.md).
    ``web`` is the endpoint behind the forwarded-address rewrite, the one layer /web
    needs (HTTP metrics ignore sockets; the route had no parameters). The route stays
    in ``routes`` for url_for and for anything that calls the router itself.
    """

    class WatchpostApp(base):  # type: ignore[valid-type,misc]
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "websocket" and scope["path"] == "/web":
                scope["app"] = self
                await web(scope, receive, send)
                return
            await super().__call__(scope, receive, send)

    return WatchpostApp


async def _start_components(services: Services) -> None:
    """Background components (collector, delivery workers, IdP); each module adds its line."""
    from app.auth.keycloak.mode import start_keycloak

    await start_keycloak(services)  # no-op unless KEYCLOAK_BASE_URL is set
    roles = services.settings.role_set
    from app.monitoring.lifecycle import start_monitoring

    if "collector" in roles:
        await start_monitoring(services)  # collector + rollups; no-op with COLLECTOR_ENABLED=false
    from app.alerting.worker import start_delivery_workers

    if "delivery" in roles:
        await start_delivery_workers(services)  # outbox drain; no-op with DELIVERY_WORKERS_ENABLED=false


async def _stop_components(services: Services) -> None:
    """Stop what :func:`_start_components` started, in reverse order."""
    from app.alerting.worker import stop_delivery_workers

    await stop_delivery_workers(services)
    from app.monitoring.lifecycle import stop_monitoring

    await stop_monitoring(services)
    from app.auth.keycloak.mode import stop_keycloak

    await stop_keycloak(services)
