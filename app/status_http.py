"""Public status pages and badges over HTTP: ``GET /status/<slug>`` and ``GET /badge/...``.

The page is a Jinja2 template (autoescaped; post bodies are the safe HTML of
app.statuspages.markdown), complete without JavaScript; with JavaScript it opens
an anonymous socket on ``/web?status_page=<slug>`` and updates live. A page
that is not public, and one that does not exist, answer the same 404. Badges
exist only for monitors on public pages and say "unknown" otherwise, never 404,
so a README keeps rendering. Both are counted per address against a scaled
HTTP bucket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from app import __version__, metrics
from app.context import Services
from app.models.base import utcnow
from app.monitoring.stats import uptime_many
from app.statuspages import badges
from app.statuspages.view import UPTIME_WINDOWS, badge_monitor, build_view, public_page, public_views

_DIR = Path(__file__).resolve().parent / "dashboard" / "templates"
_templates = Environment(loader=FileSystemLoader(str(_DIR)), autoescape=select_autoescape(["html"]))
#: Per-address HTTP bucket for pages and badges: this many times the login bucket.
PUBLIC_SCALE = 20
BADGE_CACHE = "public, max-age=60"
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' https: http: data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; form-action 'none'"
)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _limited(request: Request) -> int | None:
    services = _services(request)
    if not services.settings.rate_limit_enabled:
        return None
    address = request.client.host if request.client else "unknown"
    retry = await services.limiter.hit_http(f"public-ip:{address}", PUBLIC_SCALE)
    if retry is not None:
        metrics.RATE_LIMIT_HITS.labels(limit_type="http").inc()
    return retry


def _not_found() -> HTMLResponse:
    html = _templates.get_template("status_missing.html").render(version=__version__)
    return HTMLResponse(html, status_code=404, headers={"Cache-Control": "no-store"})


async def _cached_view(request: Request, slug: str) -> dict[str, Any] | None:
    found, view = public_views.get(("slug", slug))
    if found:
        return view
    async with _services(request).db.session() as s:
        page = await public_page(s, slug)
        view = None if page is None else await build_view(s, page, utcnow())
    public_views.put(("slug", slug), view)
    return view


async def status_page(request: Request) -> Response:
    retry = await _limited(request)
    if retry is not None:
        return Response(f"too many requests; retry in {retry} ms", status_code=429, media_type="text/plain")
    slug = str(request.path_params["slug"])
    view = await _cached_view(request, slug)
    if view is None:
        return _not_found()
    html = _templates.get_template("status_page.html").render(page=view, version=__version__)
    return HTMLResponse(
        html,
        headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP, "X-Frame-Options": "DENY"},
    )


def _svg(label: str, message: str, colour: str) -> Response:
    return Response(
        badges.svg(label, message, colour),
        media_type="image/svg+xml",
        headers={"Cache-Control": BADGE_CACHE, "X-Content-Type-Options": "nosniff"},
    )


async def badge(request: Request) -> Response:
    """``/badge/<page-slug>/<monitor>/{status,uptime,latency}.svg``; "unknown" for anything unknown."""
    kind = str(request.path_params["kind"])
    label = {"status": "status", "uptime": "uptime", "latency": "latency"}.get(kind)
    if label is None:
        return _svg("badge", "unknown", badges.COLOURS["unknown"])
    retry = await _limited(request)
    if retry is not None:
        return Response(f"too many requests; retry in {retry} ms", status_code=429, media_type="text/plain")
    window = request.query_params.get("window", "24h")
    if kind == "uptime":
        if window not in UPTIME_WINDOWS:
            return _svg(f"uptime {window[:8]}", "unknown", badges.COLOURS["unknown"])
        label = f"uptime {window}"
    services = _services(request)
    async with services.db.session() as s:
        found = await badge_monitor(s, str(request.path_params["slug"]), str(request.path_params["monitor"]))
        if found is None:
            return _svg(label, "unknown", badges.COLOURS["unknown"])
        page, monitor = found
        if kind == "status":
            return _svg(label, monitor.state, badges.COLOURS.get(monitor.state, badges.COLOURS["unknown"]))
        if kind == "latency":
            ms = monitor.last_latency_ms
            text = "unknown" if ms is None else f"{ms:.0f} ms"
            return _svg(label, text, badges.COLOURS["unknown" if ms is None else "maintenance"])
        ratio = (await uptime_many(s, page.tenant_id, utcnow(), window, [int(monitor.id or 0)])).get(
            int(monitor.id or 0)
        )
    return _svg(label, badges.percent(ratio), badges.colour_for_uptime(ratio))
