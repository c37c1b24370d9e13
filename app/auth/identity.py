"""Who is on the other end of a connection or request."""

from __future__ import annotations

from dataclasses import dataclass

#: ``Identity.kind`` of an anonymous, read-only status-page socket (``/web?status_page=<slug>``).
PAGE_VIEWER = "status_page"


@dataclass(slots=True)
class Identity:
    user_id: int
    username: str
    #: Stable subject: the user id for local users, Keycloak's ``sub`` otherwise.
    subject: str
    tenant_id: int | None
    tenant_slug: str | None
    #: Role in the connection's tenant (None: no tenant selected).
    role: str | None
    is_platform_admin: bool = False
    #: "local", "keycloak", "api" or "status_page" (:data:`PAGE_VIEWER`).
    kind: str = "local"
    #: API token id when ``kind == "api"``.
    token_id: int | None = None
    #: Token name for API tokens (the audit actor).
    token_name: str | None = None
    #: The role an API token was issued with; ``role`` is the lower of it and the creator's.
    token_role: str | None = None
    #: Local session id (revoked by /logout) or Keycloak ``sid``.
    session_id: str | None = None
    #: Unix time at which the credential expires (None: never).
    expires_at: float | None = None
    #: The status page an anonymous page viewer (``kind == "status_page"``) may read.
    page_id: int | None = None
    #: A probe token's location (docs/probes.md): its id and name.
    location_id: int | None = None
    location: str | None = None

    @property
    def actor(self) -> str:
        """The audit log's actor string."""
        if self.kind == "api":
            return f"token:{self.token_name}"
        return f"user:{self.username}"

    @property
    def limit_key(self) -> str:
        """Key for per-user limits (all of one user's connections share it); an
        anonymous page viewer's ``subject`` is its address, so they count per address."""
        if self.kind == PAGE_VIEWER:
            return f"sp:{self.subject}"
        if self.location_id is not None:
            # Each probe has its own connection cap and message budget: a tenant's
            # probes report every few seconds and must not use up their creator's.
            return f"p{self.token_id}"
        return f"u{self.user_id}"
