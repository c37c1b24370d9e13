"""The thin HTTP side: login/refresh/logout, health, metrics, the dashboard page, and
inbound webhooks (PagerDuty acknowledgements)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app import __version__, control, metrics
from app.alerting import pagerduty_webhook
from app.auth.errors import IdentityUnavailable, InvalidCredentials
from app.context import Services
from app.control import RevokeSession
from app.errors import Unavailable
from app.http_body import BodyError, has_control_chars, read_bytes, read_json_object
from app.monitoring.wire import incident_to_wire
from app.protocol import PkgID

log = logging.getLogger("watchpost.http")

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
_templates = Environment(
    loader=FileSystemLoader(str(DASHBOARD_DIR / "templates")), autoescape=select_autoescape(["html"])
)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _error(status: int, msg: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": msg, **extra}, status_code=status)


#: The per-address login bucket is this many times the per-(username, address) one:
#: several people behind one NAT must not lock each other out, while one address
#: still cannot try passwords against many accounts at more than this multiple.
LOGIN_ADDRESS_SCALE = 5
_USERNAME_MAX = 150
_TOKEN_MAX = 16 * 1024


def _client_ip(request: Request) -> str:
    """The peer, or the client a trusted proxy names (``app.forwarded``)."""
    return request.client.host if request.client else "unknown"


async def _limited(services: Services, *keys: tuple[str, int]) -> int | None:
    """Count one request against each (key, scale) bucket; the first refusal wins."""
    if not services.settings.rate_limit_enabled:
        return None
    for key, scale in keys:
        retry = await services.limiter.hit_http(key, scale)
        if retry is not None:
            metrics.RATE_LIMIT_HITS.labels(limit_type="http").inc()
            return retry
    return None


_LOGIN_USAGE = 'send JSON {"username": "...", "password": "..."}'
_TOKEN_USAGE = 'send JSON {"refresh_token": "..."}'


async def _body(request: Request, usage: str) -> dict[str, Any] | Response:
    try:
        return await read_json_object(request, _services(request).settings.http_max_body_bytes)
    except BodyError as exc:
        return _error(exc.status, f"{exc}; {usage}" if exc.status == 400 else str(exc))


def _text_problem(name: str, value: str, max_length: int) -> str | None:
    """Why ``value`` cannot be used as ``name`` (checked before any lookup or hashing)."""
    if len(value) > max_length:
        return f"{name} is longer than {max_length} characters"
    if has_control_chars(value):
        return f"{name} must not contain control characters (U+0000 to U+001F, U+007F)"
    return None


async def _refresh_token(request: Request) -> str | Response:
    body = await _body(request, _TOKEN_USAGE)
    if isinstance(body, Response):
        return body
    token = body.get("refresh_token")
    if not isinstance(token, str) or not token:
        return _error(400, _TOKEN_USAGE)
    problem = _text_problem("refresh_token", token, _TOKEN_MAX)
    if problem is not None:
        return _error(400, f"{problem}; send the refresh token exactly as issued")
    return token


async def login(request: Request) -> Response:
    services = _services(request)
    body = await _body(request, _LOGIN_USAGE)
    if isinstance(body, Response):
        return body
    username = body.get("username")
    password = body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        return _error(400, _LOGIN_USAGE)
    problem = _text_problem("username", username, _USERNAME_MAX) or _text_problem(
        "password", password, services.settings.password_max_length
    )
    if problem is not None:
        return _error(400, problem)
    address = _client_ip(request)
    # Guesses against one account are limited per address, so a stranger cannot
    # lock a user out everywhere; the wider per-address bucket bounds spraying.
    retry = await _limited(
        services,
        (f"login-ip:{address}", LOGIN_ADDRESS_SCALE),
        (f"login-user:{username.lower()}@{address}", 1),
    )
    if retry is not None:
        return _error(429, f"too many login attempts; retry in {retry} ms", retry_after_ms=retry)
    provider = services.keycloak
    try:
        if provider is not None:
            tokens = await provider.login(username, password)
        else:
            tokens, _user = await services.local_auth.login(username, password)
    except InvalidCredentials:
        metrics.AUTH_ATTEMPTS.labels(status="failure").inc()
        await _audit_login(services, request, username, 8)
        return _error(401, "wrong username or password")
    except (IdentityUnavailable, Unavailable) as exc:
        metrics.AUTH_ATTEMPTS.labels(status="unavailable").inc()
        return _error(503, f"identity service unavailable: {exc}; retry shortly")
    metrics.AUTH_ATTEMPTS.labels(status="success").inc()
    await _audit_login(services, request, username, 0)
    return JSONResponse(tokens.as_json())


async def _audit_login(services: Services, request: Request, username: str, code: int) -> None:
    from app.models.audit import AuditEntry

    try:
        async with services.db.session() as s:
            s.add(
                AuditEntry(
                    actor=f"user:{username[:150]}",
                    action="LOGIN",
                    status_code=code,
                    client_addr=_client_ip(request),
                )
            )
            await s.commit()
    except Exception:  # noqa: BLE001 - never fail a login because of the audit row
        log.warning("could not write login audit row")


async def refresh(request: Request) -> Response:
    services = _services(request)
    token = await _refresh_token(request)
    if isinstance(token, Response):
        return token
    retry = await _limited(services, (f"refresh-ip:{_client_ip(request)}", 1))
    if retry is not None:
        return _error(429, f"too many requests; retry in {retry} ms", retry_after_ms=retry)
    provider = services.keycloak
    try:
        tokens = await (
            provider.refresh(token) if provider is not None else services.local_auth.refresh(token)
        )
    except InvalidCredentials as exc:
        return _error(401, str(exc))
    except (IdentityUnavailable, Unavailable) as exc:
        return _error(503, f"identity service unavailable: {exc}; retry shortly")
    return JSONResponse(tokens.as_json())


async def logout(request: Request) -> Response:
    services = _services(request)
    token = await _refresh_token(request)
    if isinstance(token, Response):
        return token
    provider = services.keycloak
    try:
        if provider is not None:
            from app.auth.keycloak.identity import KeycloakIdentity
            from app.auth.keycloak.sessions import end_session

            keycloak_sid = await provider.logout(token)
            identity = services.authenticator.external
            if keycloak_sid is not None and isinstance(identity, KeycloakIdentity):
                # Refused everywhere from now on; live sockets close at once.
                await end_session(identity, services.hub.announce, keycloak_sid)
        else:
            session_id = await services.local_auth.logout(token)
            if session_id is not None:
                await control.publish(services.broker, RevokeSession(str(session_id)))
    except InvalidCredentials as exc:
        return _error(401, str(exc))
    except (IdentityUnavailable, Unavailable) as exc:
        return _error(503, f"identity service unavailable: {exc}; retry shortly")
    return JSONResponse({"logged_out": True})


#: Per-address bucket for inbound webhooks: this many times the login bucket (PagerDuty
#: sends from a few addresses, one request per incident event).
HOOK_SCALE = 20
_MAX_CHANNEL_ID = 2**63 - 1


async def pagerduty_hook(request: Request) -> Response:
    """``POST /hooks/pagerduty/<channel id>``: a signed PagerDuty V3 webhook
    (app.alerting.pagerduty_webhook); an acknowledgement is announced like INCIDENT_ACK's."""
    services = _services(request)
    address = _client_ip(request)
    retry = await _limited(services, (f"hook-ip:{address}", HOOK_SCALE))
    if retry is not None:
        return _error(429, f"too many requests; retry in {retry} ms", retry_after_ms=retry)
    try:
        body = await read_bytes(request, pagerduty_webhook.MAX_BODY_BYTES)
    except BodyError as exc:
        return _error(exc.status, str(exc))
    raw_id = str(request.path_params["channel"])
    channel_id = int(raw_id) if raw_id.isdigit() and len(raw_id) <= 19 else 0
    if not 0 < channel_id <= _MAX_CHANNEL_ID:
        pagerduty_webhook.signature_ok("0" * 32, body, None)
        return JSONResponse(pagerduty_webhook.REFUSED.body, status_code=pagerduty_webhook.REFUSED.status)
    outcome = await pagerduty_webhook.receive(
        services.db, channel_id, body, request.headers.get("x-pagerduty-signature"), address
    )
    incident = outcome.incident
    if incident is not None and outcome.tenant_id is not None:
        wire = {**incident_to_wire(incident), "monitor": outcome.monitor}
        await services.events.publish(
            outcome.tenant_id,
            "incidents",
            int(PkgID.EVENT_INCIDENT),
            {"action": "acknowledged", "incident": wire},
        )
    return JSONResponse(outcome.body, status_code=outcome.status)


async def health(request: Request) -> Response:
    """Liveness: the process answers. Reports the database for humans."""
    services = _services(request)
    db_ok = await services.db.ping()
    return JSONResponse({"status": "ok", "version": __version__, "database": "ok" if db_ok else "down"})


async def ready(request: Request) -> Response:
    """Readiness: database and broker reachable and not draining; 503 otherwise."""
    services = _services(request)
    db_ok = await services.db.ping()
    broker_ok = await services.broker.ready()
    draining = services.hub.draining
    ok = db_ok and broker_ok and not draining
    body = {
        "status": "ready" if ok else "not_ready",
        "database": "ok" if db_ok else "down",
        "broker": ("ok" if broker_ok else "down") if services.settings.redis_url else "in-process",
        "draining": draining,
        "connections": len(services.hub.connections),
    }
    return JSONResponse(body, status_code=200 if ok else 503)


async def metrics_endpoint(request: Request) -> Response:
    await _refresh_backlog_gauges(_services(request))
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


async def _refresh_backlog_gauges(services: Services) -> None:
    """Collector lag and outbox depth are database facts shared by every instance:
    read them when scraped (two indexed counts, the domain's own queries) instead of
    keeping them in memory."""
    from app.alerting.outbox import pending_count
    from app.monitoring.collector import due_count

    try:
        async with asyncio.timeout(2.0):
            lag = await due_count(services.db)
            depth = await pending_count(services.db, in_flight=False)
    except Exception:  # noqa: BLE001 - the scrape still answers; db_errors_total tells why
        metrics.DB_ERRORS.inc()
        return
    metrics.COLLECTOR_LAG.set(lag)
    metrics.OUTBOX_DEPTH.set(depth)


async def dashboard(request: Request) -> Response:
    template = _templates.get_template("index.html")
    return HTMLResponse(template.render(version=__version__))


class HTTPMetricsMiddleware:
    """Counts HTTP requests by route template (bounded labels); logs without query strings."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = _route_template(scope)
        method = scope["method"]
        status = {"code": 500}

        async def _send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        gauge = metrics.HTTP_IN_PROGRESS.labels(method=method, endpoint=endpoint)
        gauge.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, _send)
        finally:
            elapsed = time.perf_counter() - started
            gauge.dec()
            metrics.HTTP_REQUESTS.labels(
                method=method, endpoint=endpoint, status_code=str(status["code"])
            ).inc()
            metrics.HTTP_DURATION.labels(method=method, endpoint=endpoint).observe(elapsed)
            if endpoint not in ("/metrics", "/health", "/health/ready"):
                log.info("%s %s %d %.1fms", method, endpoint, status["code"], elapsed * 1000)


def _route_template(scope: Scope) -> str:
    app = scope.get("app")
    router = getattr(app, "router", None)
    for route in getattr(router, "routes", []):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"
