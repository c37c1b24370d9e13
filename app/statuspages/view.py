"""What a status page shows, built in one place for the HTML page, STATUS_PAGE_VIEW and badges.

Per monitor a page shows its name, state, uptime over the page's window and,
when the page asks for it, the last latency. Never the definition (URL, host,
keyword, conditions) nor the last error text, which may quote a host or a body.
Posts are rendered to safe HTML here (:mod:`app.statuspages.markdown`); the
active maintenance windows covering the page's monitors are added automatically.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.models.base import iso
from app.models.monitor import Monitor
from app.models.status_page import StatusPage, StatusPageMonitor, StatusPost
from app.monitoring.recorder import active_windows
from app.monitoring.stats import uptime_many
from app.statuspages.markdown import render

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
_SLUG = re.compile(SLUG_PATTERN)
UPTIME_WINDOWS = ("24h", "7d", "30d")
SEVERITIES = ("info", "minor", "major", "critical")
#: Resolved posts stay on the page (marked resolved) this long.
RESOLVED_VISIBLE = timedelta(hours=24)
#: Most monitors one page may show (all sections together).
MAX_PAGE_MONITORS = 1000


def valid_slug(slug: str) -> bool:
    return len(slug) <= 64 and _SLUG.fullmatch(slug) is not None


def page_monitor_ids(page: StatusPage) -> list[int]:
    """The page's monitor ids in display order (sections in order, each in its order)."""
    return [int(mid) for section in page.sections or [] for mid in section.get("monitors", [])]


async def sync_monitors(session: AsyncSession, page: StatusPage) -> None:
    """Rewrite the page's lookup rows from its sections (inside the caller's transaction)."""
    assert page.id is not None
    await session.execute(delete(StatusPageMonitor).where(col(StatusPageMonitor.page_id) == page.id))
    for mid in dict.fromkeys(page_monitor_ids(page)):
        session.add(StatusPageMonitor(page_id=page.id, monitor_id=mid, tenant_id=page.tenant_id))


async def page_by_slug(session: AsyncSession, slug: str) -> StatusPage | None:
    if not valid_slug(slug):
        return None
    row = await session.execute(select(StatusPage).where(col(StatusPage.slug) == slug))
    return row.scalar_one_or_none()


async def public_page(session: AsyncSession, slug: str) -> StatusPage | None:
    """The page anyone may read, or None (no such page, or members only: the same answer)."""
    page = await page_by_slug(session, slug)
    return page if page is not None and page.public else None


def overall(states: list[str]) -> str:
    """One word for the whole page: down beats degraded beats maintenance beats up."""
    if not states:
        return "unknown"
    for worst in ("down", "degraded", "maintenance"):
        if worst in states:
            return worst
    return "up" if "up" in states else "unknown"


def page_fields(page: StatusPage) -> dict[str, Any]:
    """What an editor set on a page, as both its editors (the page packages) and its
    readers (the view) see it; sections are added by each in its own form."""
    return {
        "id": page.id,
        "slug": page.slug,
        "title": page.title,
        "description": page.description,
        "logo_url": page.logo_url,
        "footer": page.footer,
        "public": page.public,
        "uptime_window": page.uptime_window,
        "show_latency": page.show_latency,
    }


def post_to_view(post: StatusPost) -> dict[str, Any]:
    return {
        "id": post.id,
        "title": post.title,
        "severity": post.severity,
        "format": post.format,
        "body_html": render(post.body, post.format),
        "created_at": iso(post.created_at),
        "updated_at": iso(post.updated_at),
        "resolved_at": iso(post.resolved_at),
    }


async def build_view(session: AsyncSession, page: StatusPage, now: datetime) -> dict[str, Any]:
    """The whole page as plain data (the template and STATUS_PAGE_VIEW render the same dict)."""
    started = time.perf_counter()
    ids = page_monitor_ids(page)
    monitors: dict[int, Monitor] = {}
    if ids:
        rows = await session.execute(
            select(Monitor).where(col(Monitor.tenant_id) == page.tenant_id, col(Monitor.id).in_(ids))
        )
        monitors = {int(m.id or 0): m for m in rows.scalars().all()}
    uptimes = (
        await uptime_many(session, page.tenant_id, now, page.uptime_window, list(monitors))
        if monitors
        else {}
    )
    sections = []
    for section in page.sections or []:
        shown = []
        for mid in section.get("monitors", []):
            m = monitors.get(int(mid))
            if m is None:
                continue  # deleted since the page was saved
            item: dict[str, Any] = {
                "id": m.id,
                "name": m.name,
                "state": m.state,
                "uptime": uptimes.get(int(mid)),
            }
            if page.show_latency:
                item["latency_ms"] = m.last_latency_ms
            shown.append(item)
        sections.append({"title": section.get("title", ""), "monitors": shown})
    posts_rows = await session.execute(
        select(StatusPost)
        .where(
            col(StatusPost.page_id) == page.id,
            or_(col(StatusPost.resolved_at).is_(None), col(StatusPost.resolved_at) > now - RESOLVED_VISIBLE),
        )
        .order_by(col(StatusPost.created_at).desc(), col(StatusPost.id).desc())
        .limit(20)
    )
    windows = []
    if monitors:
        for w in await active_windows(session, {page.tenant_id}, now):
            covered = list(monitors) if w.all_monitors else [i for i in w.monitors or [] if i in monitors]
            if covered:
                windows.append(
                    {
                        "id": w.id,
                        "name": w.name,
                        "description": w.description,
                        "starts_at": iso(w.starts_at),
                        "ends_at": iso(w.ends_at),
                        "monitors": [monitors[i].name for i in covered],
                    }
                )
    return {
        **page_fields(page),
        "overall": overall([m.state for m in monitors.values()]),
        "sections": sections,
        "posts": [post_to_view(p) for p in posts_rows.scalars().all()],
        "maintenance": windows,
        "topic": f"status_page.{page.id}",
        "generated_at": iso(now),
        "build_ms": round((time.perf_counter() - started) * 1000, 3),
    }


class ViewCache:
    """Views of public pages, each kept ``ttl`` seconds (per process).

    A burst of anonymous readers (a page shared during an outage, thousands of
    viewers reconnecting after a restart) costs one build per page and interval;
    live changes reach open pages over the socket in between. Bounded: at most
    ``size`` pages, the whole cache is dropped when it is full.
    """

    def __init__(self, ttl: float = 2.0, size: int = 1000) -> None:
        self.ttl = ttl
        self.size = size
        self._views: dict[object, tuple[float, dict[str, Any] | None]] = {}

    def get(self, key: object) -> tuple[bool, dict[str, Any] | None]:
        hit = self._views.get(key)
        if hit is None or hit[0] <= time.monotonic():
            return False, None
        return True, hit[1]

    def put(self, key: object, view: dict[str, Any] | None) -> None:
        if len(self._views) >= self.size:
            self._views.clear()
        self._views[key] = (time.monotonic() + self.ttl, view)


#: Shared by GET /status/<slug> (keyed by slug) and anonymous STATUS_PAGE_VIEW (keyed by id).
public_views = ViewCache()


async def badge_monitor(session: AsyncSession, slug: str, name: str) -> tuple[StatusPage, Monitor] | None:
    """The monitor called ``name`` on the public page ``slug``; None when either is unknown
    (or the page is members only, or the monitor is not on it)."""
    page = await public_page(session, slug)
    if page is None or len(name) > 200:
        return None
    row = await session.execute(
        select(Monitor)
        .join(StatusPageMonitor, col(StatusPageMonitor.monitor_id) == col(Monitor.id))
        .where(col(StatusPageMonitor.page_id) == page.id, col(Monitor.name) == name)
    )
    monitor = row.scalar_one_or_none()
    return None if monitor is None else (page, monitor)
