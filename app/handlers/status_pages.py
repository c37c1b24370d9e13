"""Status pages 600-609: pages (create, list, get, update, delete, view) and their posts.

Editors manage pages and posts; viewers read them. STATUS_PAGE_VIEW is what a
page shows (app.statuspages.view) and the one package an anonymous status-page
socket may call besides (UN)SUBSCRIBE of its page's topic. Changes publish
EVENT_MONITOR_CHANGED (902) on ``status_page.<id>`` with ``{"action", "page_id"}``
so open pages reload their view; monitor state changes reach the same topic as
EVENT_MONITOR_STATUS (900) from the recorder.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app import control
from app.auth.identity import PAGE_VIEWER
from app.context import Context
from app.errors import Conflict, InvalidData, NotFound
from app.models.base import iso, utcnow
from app.models.monitor import Monitor
from app.models.status_page import StatusPage, StatusPost
from app.protocol import PkgID, Request
from app.rbac import page_topic
from app.routing import ID, VERSION, PackageRouter, obj
from app.statuspages.view import (
    MAX_PAGE_MONITORS,
    SEVERITIES,
    SLUG_PATTERN,
    UPTIME_WINDOWS,
    build_view,
    page_fields,
    page_monitor_ids,
    post_to_view,
    public_views,
    sync_monitors,
)
from app.storage.pagination import PAGE_SCHEMA, Page, paginate
from app.urls import BadURL, check_http_url

router = PackageRouter()

#: Pages one tenant may have.
MAX_PAGES_PER_TENANT = 100
_SECTION = obj(
    {
        "title": {"type": "string", "maxLength": 200},
        "monitors": {"type": "array", "maxItems": MAX_PAGE_MONITORS, "items": ID},
    },
    ["title", "monitors"],
)
_FIELDS: dict[str, Any] = {
    "slug": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": SLUG_PATTERN},
    "title": {"type": "string", "minLength": 1, "maxLength": 200},
    "description": {"type": "string", "maxLength": 2000},
    "logo_url": {"type": ["string", "null"], "maxLength": 2048},
    "footer": {"type": "string", "maxLength": 500},
    "public": {"type": "boolean"},
    "uptime_window": {"enum": list(UPTIME_WINDOWS)},
    "show_latency": {"type": "boolean"},
    "sections": {"type": "array", "maxItems": 50, "items": _SECTION},
}
_POST_FIELDS: dict[str, Any] = {
    "title": {"type": "string", "minLength": 1, "maxLength": 200},
    "body": {"type": "string", "maxLength": 5000},
    "format": {"enum": ["text", "markdown"]},
    "severity": {"enum": list(SEVERITIES)},
}
_EXAMPLE = {
    "id": 3,
    "slug": "acme",
    "title": "Acme status",
    "description": "",
    "logo_url": None,
    "footer": "",
    "public": True,
    "uptime_window": "24h",
    "show_latency": False,
    "sections": [{"title": "API", "monitors": [1, 2]}],
    "version": 1,
}
_POST_EXAMPLE = {
    "id": 7,
    "page_id": 3,
    "title": "Slow logins",
    "body": "We are looking into it.",
    "format": "text",
    "severity": "minor",
    "resolved_at": None,
    "version": 1,
}


def _wire(page: StatusPage) -> dict[str, Any]:
    return {
        **page_fields(page),
        "sections": page.sections,
        "version": page.version,
        "created_at": iso(page.created_at),
        "updated_at": iso(page.updated_at),
    }


def _post_wire(post: StatusPost) -> dict[str, Any]:
    return {
        "id": post.id,
        "page_id": post.page_id,
        "title": post.title,
        "body": post.body,
        "format": post.format,
        "severity": post.severity,
        "created_by": post.created_by,
        "created_at": iso(post.created_at),
        "updated_at": iso(post.updated_at),
        "resolved_at": iso(post.resolved_at),
        "version": post.version,
    }


async def _load(session: AsyncSession, ctx: Context, page_id: int) -> StatusPage:
    page = await session.get(StatusPage, page_id)
    if page is None or page.tenant_id != ctx.tenant_id:
        raise NotFound(f"no status page {page_id} in this tenant")
    return page


async def _load_post(session: AsyncSession, ctx: Context, post_id: int) -> StatusPost:
    post = await session.get(StatusPost, post_id)
    if post is None or post.tenant_id != ctx.tenant_id:
        raise NotFound(f"no status post {post_id} in this tenant")
    return post


def _apply(page: StatusPage, data: dict[str, Any]) -> None:
    for key in ("slug", "title", "description", "footer", "public", "uptime_window", "show_latency"):
        if key in data:
            setattr(page, key, data[key])
    if "logo_url" in data:
        url = data["logo_url"] or None
        if url is not None:
            try:
                check_http_url(url)
            except BadURL as exc:
                raise InvalidData(f"logo_url {exc}", errors=[{"path": "logo_url", "msg": str(exc)}]) from None
        page.logo_url = url
    if "sections" in data:
        page.sections = [{"title": s["title"], "monitors": list(s["monitors"])} for s in data["sections"]]


async def _validate(
    session: AsyncSession, ctx: Context, page: StatusPage, shown_before: frozenset[int] = frozenset()
) -> None:
    """Check the sections; ids in ``shown_before`` whose monitor was deleted since are dropped
    (an editor re-saving a page must not trip over a monitor someone else deleted)."""
    if shown_before:
        existing = set(
            (
                await session.execute(
                    select(col(Monitor.id)).where(
                        col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(shown_before)
                    )
                )
            )
            .scalars()
            .all()
        )
        gone = shown_before - existing
        if gone:
            page.sections = [
                {**s, "monitors": [m for m in s["monitors"] if m not in gone]} for s in page.sections
            ]
    ids = page_monitor_ids(page)
    if len(ids) > MAX_PAGE_MONITORS:
        raise InvalidData(
            f"a page shows at most {MAX_PAGE_MONITORS} monitors; this one lists {len(ids)}",
            errors=[{"path": "sections", "msg": "too many monitors"}],
        )
    seen: set[int] = set()
    for i, mid in enumerate(ids):
        if mid in seen:
            raise InvalidData(
                f"monitor {mid} is listed twice; a monitor appears in one section once",
                errors=[{"path": f"sections (monitor #{i + 1})", "msg": f"duplicate monitor {mid}"}],
            )
        seen.add(mid)
    if ids:
        found = await session.execute(
            select(col(Monitor.id)).where(col(Monitor.tenant_id) == ctx.tenant_id, col(Monitor.id).in_(ids))
        )
        missing = sorted(seen - set(found.scalars().all()))
        if missing:
            raise InvalidData(
                f"monitors {missing[:10]} are not monitors of this tenant",
                errors=[{"path": "sections", "msg": f"unknown monitor ids {missing[:10]}"}],
            )


def _event(ctx: Context, page_id: int | None, action: str) -> None:
    """Queued after the commit: ``at`` is later than the change, so a view built at or after
    ``at`` shows it (open pages ask STATUS_PAGE_VIEW with ``newer_than: at``)."""
    assert page_id is not None
    ctx.publish(
        page_topic(page_id),
        PkgID.EVENT_MONITOR_CHANGED,
        {"action": action, "page_id": page_id, "at": iso(utcnow())},
    )


@router.package(
    PkgID.STATUS_PAGE_CREATE,
    schema=obj(_FIELDS, ["slug", "title"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def status_page_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Create a page; its slug is its public address (/status/<slug>) and unique on the server."""
    page = StatusPage(tenant_id=ctx.tenant_id, slug=req.data["slug"], title=req.data["title"])
    _apply(page, req.data)
    try:
        async with ctx.tx() as s:
            count = await s.scalar(
                select(func.count()).select_from(StatusPage).where(col(StatusPage.tenant_id) == ctx.tenant_id)
            )
            if int(count or 0) >= MAX_PAGES_PER_TENANT:
                raise Conflict(
                    f"this tenant already has {MAX_PAGES_PER_TENANT} status pages; delete one first"
                )
            await _validate(s, ctx, page)
            s.add(page)
            await s.flush()
            await sync_monitors(s, page)
            ctx.audit_target = str(page.id)
    except IntegrityError:
        raise Conflict(f"the slug {req.data['slug']!r} is taken; pick another") from None
    return _wire(page)


@router.package(PkgID.STATUS_PAGE_LIST, schema=obj(PAGE_SCHEMA), response_example=[_EXAMPLE])
async def status_page_list(req: Request, ctx: Context) -> Page:
    """This tenant's pages in creation order."""
    stmt = select(StatusPage).where(col(StatusPage.tenant_id) == ctx.tenant_id).order_by(col(StatusPage.id))
    async with ctx.services.db.session() as s:
        rows, meta = await paginate(s, stmt, req.data)
    return Page([_wire(p) for p in rows], meta)


@router.package(PkgID.STATUS_PAGE_GET, schema=obj({"id": ID}, ["id"]), response_example=_EXAMPLE)
async def status_page_get(req: Request, ctx: Context) -> dict[str, Any]:
    """One page's settings and sections (for editing; STATUS_PAGE_VIEW is what it shows)."""
    async with ctx.services.db.session() as s:
        return _wire(await _load(s, ctx, req.data["id"]))


@router.package(
    PkgID.STATUS_PAGE_UPDATE,
    schema=obj({"id": ID, "version": VERSION, **_FIELDS}, ["id", "version"]),
    audit=True,
    response_example=_EXAMPLE,
)
async def status_page_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Change a page (settings, sections and their order); ``version`` must be the one you read."""
    data = req.data
    ctx.audit_target = str(data["id"])
    try:
        async with ctx.tx() as s:
            page = await _load(s, ctx, data["id"])
            if page.version != data["version"]:
                raise Conflict(
                    f"page {page.id} was changed since you read it (version {page.version}, "
                    f"you sent {data['version']}); reload it and apply your change again"
                )
            old_slug = page.slug
            shown_before = frozenset(page_monitor_ids(page))
            _apply(page, data)
            await _validate(s, ctx, page, shown_before)
            page.version += 1
            page.updated_at = utcnow()
            await s.flush()
            if "sections" in data:
                await sync_monitors(s, page)
    except IntegrityError:
        raise Conflict(f"the slug {data.get('slug')!r} is taken; pick another") from None
    _event(ctx, page.id, "page_updated" if page.public else "page_closed")
    if not page.public or page.slug != old_slug:
        # Anonymous viewers hold the page by its old address and visibility: they go.
        await control.publish(ctx.services.broker, control.ClosePage(int(page.id or 0)))
    return _wire(page)


@router.package(
    PkgID.STATUS_PAGE_DELETE, schema=obj({"id": ID}, ["id"]), audit=True, response_example={"id": 3}
)
async def status_page_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a page with its posts; its address answers 404 from now on."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        page = await _load(s, ctx, req.data["id"])
        await s.delete(page)
    _event(ctx, page.id, "page_closed")
    await control.publish(ctx.services.broker, control.ClosePage(req.data["id"]))
    return {"id": req.data["id"]}


@router.package(
    PkgID.STATUS_PAGE_VIEW,
    schema=obj({"id": ID, "newer_than": {"type": "string", "minLength": 1, "maxLength": 40}}),
    response_example={
        "id": 3,
        "slug": "acme",
        "title": "Acme status",
        "overall": "up",
        "sections": [
            {"title": "API", "monitors": [{"id": 1, "name": "api", "state": "up", "uptime": 0.9993}]}
        ],
        "posts": [],
        "maintenance": [],
        "topic": "status_page.3",
    },
)
async def status_page_view(req: Request, ctx: Context) -> dict[str, Any]:
    """What the page shows: sections with state and uptime, posts, active maintenance.

    A member names the page by ``id``; an anonymous status-page socket reads its own
    page (``id`` may be left out, another id is not found). Anonymous reads share a view
    built in the last 2 s unless it is older than ``newer_than`` (the ``at`` of the 902
    event that made the page read again).
    """
    ident = ctx.identity
    if ident.kind == PAGE_VIEWER:
        page_id = req.data.get("id", ident.page_id)
        if page_id != ident.page_id:
            raise NotFound(f"no status page {page_id}")
    elif "id" not in req.data:
        raise InvalidData('name the page: {"id": <page id>}', errors=[{"path": "id", "msg": "required"}])
    else:
        page_id = req.data["id"]
    if ident.kind == PAGE_VIEWER:
        found, cached = public_views.get(("id", page_id))
        if found and cached is not None and cached["generated_at"] >= req.data.get("newer_than", ""):
            return cached
    async with ctx.services.db.session() as s:
        page = await _load(s, ctx, int(page_id or 0))
        if ident.kind == PAGE_VIEWER and not page.public:
            raise NotFound(f"no status page {page_id}")
        view = await build_view(s, page, utcnow())
    if ident.kind == PAGE_VIEWER:
        public_views.put(("id", page_id), view)
    return view


@router.package(
    PkgID.STATUS_POST_CREATE,
    schema=obj({"page_id": ID, **_POST_FIELDS}, ["page_id", "title"]),
    audit=True,
    response_example=_POST_EXAMPLE,
)
async def status_post_create(req: Request, ctx: Context) -> dict[str, Any]:
    """Post a notice on a page (plain text or limited Markdown); it shows until resolved."""
    data = req.data
    async with ctx.tx() as s:
        page = await _load(s, ctx, data["page_id"])
        post = StatusPost(
            page_id=page.id or 0,
            tenant_id=page.tenant_id,
            title=data["title"],
            body=data.get("body", ""),
            format=data.get("format", "text"),
            severity=data.get("severity", "info"),
            created_by=ctx.identity.actor,
        )
        s.add(post)
        await s.flush()
        ctx.audit_target = str(post.id)
    _event(ctx, page.id, "post_created")
    return _post_wire(post)


@router.package(
    PkgID.STATUS_POST_UPDATE,
    schema=obj(
        {"id": ID, "version": VERSION, **_POST_FIELDS, "resolved": {"type": "boolean"}}, ["id", "version"]
    ),
    audit=True,
    response_example={**_POST_EXAMPLE, "resolved_at": "2026-12-05T10:00:00.000Z", "version": 2},
)
async def status_post_update(req: Request, ctx: Context) -> dict[str, Any]:
    """Edit a post, or resolve it (``resolved: true``; ``false`` reopens it)."""
    data = req.data
    ctx.audit_target = str(data["id"])
    async with ctx.tx() as s:
        post = await _load_post(s, ctx, data["id"])
        if post.version != data["version"]:
            raise Conflict(
                f"post {post.id} was changed since you read it (version {post.version}, "
                f"you sent {data['version']}); reload it and apply your change again"
            )
        for key in ("title", "body", "format", "severity"):
            if key in data:
                setattr(post, key, data[key])
        now = utcnow()
        if "resolved" in data:
            post.resolved_at = (post.resolved_at or now) if data["resolved"] else None
        post.version += 1
        post.updated_at = now
        await s.flush()
    _event(ctx, post.page_id, "post_updated")
    return _post_wire(post)


@router.package(
    PkgID.STATUS_POST_LIST,
    schema=obj({**PAGE_SCHEMA, "page_id": ID}, ["page_id"]),
    response_example=[_POST_EXAMPLE],
)
async def status_post_list(req: Request, ctx: Context) -> Page:
    """A page's posts, newest first, resolved ones included, with their rendered HTML."""
    async with ctx.services.db.session() as s:
        page = await _load(s, ctx, req.data["page_id"])
        stmt = (
            select(StatusPost)
            .where(col(StatusPost.page_id) == page.id)
            .order_by(col(StatusPost.created_at).desc(), col(StatusPost.id).desc())
        )
        rows, meta = await paginate(s, stmt, req.data)
    return Page([{**_post_wire(p), "body_html": post_to_view(p)["body_html"]} for p in rows], meta)


@router.package(
    PkgID.STATUS_POST_DELETE, schema=obj({"id": ID}, ["id"]), audit=True, response_example={"id": 7}
)
async def status_post_delete(req: Request, ctx: Context) -> dict[str, Any]:
    """Delete a post."""
    ctx.audit_target = str(req.data["id"])
    async with ctx.tx() as s:
        post = await _load_post(s, ctx, req.data["id"])
        await s.delete(post)
    _event(ctx, post.page_id, "post_deleted")
    return {"id": req.data["id"]}
