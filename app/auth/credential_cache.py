"""What a handshake read from the database about a credential, kept per process for a few seconds.

An authenticated connect used to read the session, the user and the
membership (a local JWT) or the token, its tenant, user and the creator's
membership (an API token) on every handshake: about 3 ms of server CPU, so a
reconnect storm of 5,000 dashboards cost 15 s of a core. The resolved
:class:`Identity` is cached here under the credential (the SHA-256 of the local
JWT or API token) and the tenant asked for; a cached local JWT is not even
decoded again (its signature was checked, and the entry ends with its expiry).

Freshness: every control message (``app.control``: a revoked token or session,
a removed member, a changed role) drops the entries it concerns the moment the
hub applies it, on every instance, before any connection is closed or updated,
so a revocation is never honoured after its control message arrives. What no
control message announces (a control message lost while the broker was down, a
row changed by hand in the database) is read again at the latest
``ttl`` seconds after it was cached. Expiry is checked on every hit.

A read that was in flight while a control message arrived may have seen the
rows before the change: :meth:`CredentialCache.generation` lets the reader
notice and not store it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from app.auth.identity import Identity
from app.control import ControlMessage, MemberRoleChanged, RevokeMembership, RevokeSession, RevokeToken

#: Entries kept at most; the oldest go first. 10,000 distinct credentials fit in a few MB.
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class _Entry:
    identity: Identity
    #: Monotonic time after which the entry is read again from the database.
    stale_at: float
    #: Unix time after which the credential behind it is no longer valid (None: never).
    valid_until: float | None


class CredentialCache:
    """Identities by credential key; ``ttl <= 0`` turns the cache off."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._wall = wall
        self._entries: dict[Hashable, _Entry] = {}
        self._generation = 0
        #: Lookups answered from the cache / read from the database (for tests and metrics).
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    @property
    def generation(self) -> int:
        """Changes with every control message; read it before a database read, pass it to :meth:`put`."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Identity | None:
        """A copy of the cached identity, or None (absent, stale, or its credential expired)."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.stale_at > self._clock() and (
                entry.valid_until is None or entry.valid_until > self._wall()
            ):
                self.hits += 1
                # A copy: a connection may replace its identity, never the cached one.
                return dataclasses.replace(entry.identity)
            del self._entries[key]
        self.misses += 1
        return None

    def put(self, key: Hashable, identity: Identity, valid_until: float | None, generation: int) -> None:
        """Cache ``identity`` unless a control message arrived since ``generation`` was read."""
        if not self.enabled or generation != self._generation:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(dataclasses.replace(identity), self._clock() + self.ttl, valid_until)

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def forget(self, message: ControlMessage) -> int:
        """Drop every entry ``message`` concerns; returns how many."""
        self._generation += 1
        doomed = [key for key, entry in self._entries.items() if _concerns(message, entry.identity)]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()


def _concerns(message: ControlMessage, ident: Identity) -> bool:
    match message:
        case RevokeToken(token_id):
            return ident.kind == "api" and ident.token_id == token_id
        case RevokeSession(session_id):
            return ident.session_id == session_id
        case RevokeMembership(user_id, tenant_id) | MemberRoleChanged(user_id, tenant_id, _):
            # The user's own sessions in that tenant and the API tokens they created there.
            return ident.user_id == user_id and ident.tenant_id == tenant_id
    return False
