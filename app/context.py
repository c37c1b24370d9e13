"""What a handler gets: the app's services and the request's context.

``Services`` is built once by ``create_app``; ``Context`` once per request.
The background components (collector, delivery worker, Keycloak) are typed
fields that their start hooks fill in during the app's lifespan and clear on
shutdown; ``None`` means the component does not run on this instance.
Handlers touch the database through :meth:`Context.tx`, which commits, writes
the audit row in the same transaction, and only then publishes the events the
handler queued with :meth:`Context.publish` — an event never announces a change
that was rolled back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.identity import Identity
from app.models.audit import AuditEntry
from app.protocol import PkgID

if TYPE_CHECKING:
    from app.alerting.worker import DeliveryWorker
    from app.auth.authenticator import Authenticator
    from app.auth.keycloak.provider import KeycloakProvider
    from app.auth.keycloak.sessions import KeycloakSessionWatch
    from app.auth.local import LocalAuth
    from app.broker.base import Broker
    from app.events import EventBus
    from app.limits import Limiter
    from app.monitoring.collector import Collector
    from app.rbac import Policy
    from app.routing import PackageRouter
    from app.session import Session
    from app.settings import Settings
    from app.storage.db import Database
    from app.ws.hub import Hub

log = logging.getLogger("watchpost.context")


@dataclass
class Services:
    settings: Settings
    db: Database
    policy: Policy
    router: PackageRouter
    broker: Broker
    events: EventBus
    limiter: Limiter
    local_auth: LocalAuth
    authenticator: Authenticator
    hub: Hub
    # Set by the start hooks in create_app's lifespan, cleared by the stop hooks.
    collector: Collector | None = None
    #: Rollups and retention (app.monitoring.retention), runs beside the collector.
    housekeeping: asyncio.Task[None] | None = None
    delivery_worker: DeliveryWorker | None = None
    #: Set in Keycloak mode (KEYCLOAK_BASE_URL); the HTTP login routes use it instead of local users.
    keycloak: KeycloakProvider | None = None
    keycloak_watch: KeycloakSessionWatch | None = None


@dataclass
class Context:
    services: Services
    identity: Identity
    pkg_id: int
    req_id: str
    #: The connection the request came on, as handlers may use it (None without a socket).
    session: Session | None = None
    client_addr: str | None = None
    _events: list[tuple[str, int, Any]] = field(default_factory=list)
    #: Set by handlers: the id of the object the request acted on (audit log).
    audit_target: str | None = None
    #: Set by handlers: what the client asked for, secrets masked (audit log ``details``).
    audit_details: dict[str, Any] | None = None
    #: True once the audit row has been written inside a transaction.
    audited: bool = False

    @property
    def settings(self) -> Settings:
        return self.services.settings

    @property
    def tenant_id(self) -> int:
        """The connection's tenant; handlers of tenant data call this (never None there)."""
        from app.errors import PermissionDenied

        if self.identity.tenant_id is None:
            raise PermissionDenied("this connection has no tenant; reconnect with ?tenant=<slug>")
        return self.identity.tenant_id

    def publish(self, topic: str, pkg_id: int, data: Any) -> None:
        """Queue an event on a tenant-relative topic; sent after the transaction commits."""
        self._events.append((topic, pkg_id, data))

    @asynccontextmanager
    async def tx(self, *, audit: bool | None = None) -> AsyncIterator[AsyncSession]:
        """A session in a transaction. On success: audit row (for mutating packages),
        commit, then the queued events. On error: rollback, events dropped."""
        router = self.services.router
        write_audit = router.is_audited(self.pkg_id) if audit is None else audit
        async with self.services.db.session() as session:
            try:
                yield session
                if write_audit:
                    session.add(self.audit_entry(0))
                await session.commit()
            except BaseException:
                self._events.clear()
                await session.rollback()
                raise
        if write_audit:
            self.audited = True
        await self.flush_events()

    async def flush_events(self) -> None:
        events, self._events = self._events, []
        tenant_id = self.identity.tenant_id
        if tenant_id is None:
            return
        for topic, pkg_id, data in events:
            await self.services.events.publish(tenant_id, topic, pkg_id, data)

    def audit_entry(self, status_code: int) -> AuditEntry:
        try:
            action = PkgID(self.pkg_id).name
        except ValueError:
            action = str(self.pkg_id)
        return AuditEntry(
            tenant_id=self.identity.tenant_id,
            actor=self.identity.actor,
            action=action,
            pkg_id=self.pkg_id,
            target_id=self.audit_target,
            req_id=self.req_id,
            status_code=status_code,
            client_addr=self.client_addr,
            details=self.audit_details,
        )
