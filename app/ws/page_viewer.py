"""Anonymous status-page sockets: ``/web?status_page=<slug>``.

A public page's viewers connect without a credential. They get an identity of
kind ``status_page`` (no user, no role) bound to that one page: the router lets
it call only :data:`app.rbac.PAGE_VIEWER_PACKAGES` and ``check_topics`` lets it
subscribe only to the page's topic. Its connections count per address and per
page, each with its own limit (``STATUS_PAGE_MAX_PER_ADDRESS``,
``STATUS_PAGE_MAX_VIEWERS``); its messages count per address. An unknown slug
and a members-only page are refused alike (4001 "no such status page").
"""

from __future__ import annotations

from app.auth.identity import PAGE_VIEWER, Identity
from app.context import Services
from app.settings import Settings
from app.statuspages.view import public_page

NO_SUCH_PAGE = "no such status page"


async def page_viewer(services: Services, slug: str, address: str | None) -> Identity | None:
    """The identity of an anonymous viewer of the public page ``slug``; None when there is none."""
    async with services.db.session() as s:
        page = await public_page(s, slug)
    if page is None or page.id is None:
        return None
    return Identity(
        user_id=0,
        username=f"status-page:{page.slug}",
        subject=address or "unknown",
        tenant_id=page.tenant_id,
        tenant_slug=None,
        role=None,
        kind=PAGE_VIEWER,
        page_id=page.id,
    )


def connection_slots(identity: Identity, settings: Settings) -> list[tuple[str, int | None]]:
    """The (limit key, limit) pairs a connection of ``identity`` takes; None: the per-user limit."""
    if identity.kind != PAGE_VIEWER:
        return [(identity.limit_key, None)]
    return [
        (identity.limit_key, settings.status_page_max_per_address),
        (f"spv:{identity.page_id}", settings.status_page_max_viewers),
    ]
