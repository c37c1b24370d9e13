"""The handshake's credential cache (app/auth/credential_cache.py): freshness rules, pure.

The server-side proof (a second connect reads no row; a control message over a
real broker drops the entry) is tests/test_credential_cache.py.
"""

from __future__ import annotations

import pytest

from app.auth.credential_cache import CredentialCache
from app.auth.identity import Identity
from app.control import ControlMessage, MemberRoleChanged, RevokeMembership, RevokeSession, RevokeToken


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def local(user_id: int = 1, tenant_id: int = 10, session_id: str = "5") -> Identity:
    return Identity(user_id, "ann", str(user_id), tenant_id, "acme", "editor", session_id=session_id)


def api(user_id: int = 1, tenant_id: int = 10, token_id: int = 7) -> Identity:
    return Identity(user_id, "ann", str(user_id), tenant_id, "acme", "viewer", kind="api", token_id=token_id)


def cache(ttl: float = 30.0, clock: Clock | None = None, wall: Clock | None = None) -> CredentialCache:
    return CredentialCache(ttl, clock=clock or Clock(), wall=wall or Clock())


def test_a_hit_returns_a_copy_of_what_was_stored() -> None:
    c = cache()
    c.put("k", local(), None, c.generation)
    got = c.get("k")
    assert got == local()
    assert got is not None
    got.role = "owner"  # a connection changing its identity leaves the entry alone
    assert c.get("k") == local()
    assert (c.hits, c.misses) == (2, 0)


def test_entries_go_stale_after_the_ttl() -> None:
    clock = Clock()
    c = cache(ttl=30, clock=clock)
    c.put("k", local(), None, c.generation)
    clock.now += 29.9
    assert c.get("k") is not None
    clock.now += 0.2
    assert c.get("k") is None
    assert len(c) == 0


def test_an_expired_credential_is_never_served() -> None:
    wall = Clock()
    c = cache(wall=wall)
    c.put("k", api(), wall.now + 5, c.generation)
    assert c.get("k") is not None
    wall.now += 5
    assert c.get("k") is None


def test_ttl_zero_turns_the_cache_off() -> None:
    c = cache(ttl=0)
    c.put("k", local(), None, c.generation)
    assert c.get("k") is None and not c.enabled


def test_a_read_overtaken_by_a_control_message_is_not_stored() -> None:
    """The rows may have been read before the change the message announces."""
    c = cache()
    before = c.generation
    c.forget(RevokeSession("999"))  # concerns nothing cached, but arrived during the read
    c.put("k", local(), None, before)
    assert c.get("k") is None
    c.put("k", local(), None, c.generation)
    assert c.get("k") is not None


@pytest.mark.parametrize(
    ("message", "dropped"),
    [
        (RevokeSession("5"), {"ann-session-5"}),
        (RevokeToken(7), {"token-7"}),
        # Removing a member or changing their role: their sessions and their tokens in that tenant.
        (RevokeMembership(1, 10), {"ann-session-5", "ann-session-6", "token-7"}),
        (MemberRoleChanged(1, 10, "viewer"), {"ann-session-5", "ann-session-6", "token-7"}),
        (RevokeMembership(1, 11), {"ann-other-tenant"}),
        (RevokeMembership(2, 10), {"bob"}),
        (RevokeToken(8), set()),
        (RevokeSession("7"), set()),  # a token id is not a session id
    ],
    ids=repr,
)
def test_a_control_message_drops_exactly_the_entries_it_concerns(
    message: ControlMessage, dropped: set[str]
) -> None:
    entries = {
        "ann-session-5": local(session_id="5"),
        "ann-session-6": local(session_id="6"),
        "ann-other-tenant": local(tenant_id=11, session_id="9"),
        "token-7": api(token_id=7),
        "bob": local(user_id=2, session_id="12"),
    }
    c = cache()
    for key, identity in entries.items():
        c.put(key, identity, None, c.generation)
    assert c.forget(message) == len(dropped)
    assert {key for key in entries if c.get(key) is None} == dropped


def test_the_oldest_entries_make_room() -> None:
    c = CredentialCache(30, max_entries=3, clock=Clock(), wall=Clock())
    for n in range(5):
        c.put(n, local(session_id=str(n)), None, c.generation)
    assert len(c) == 3
    assert [n for n in range(5) if c.get(n) is not None] == [2, 3, 4]


def test_discard_and_clear() -> None:
    c = cache()
    c.put("a", local(), None, c.generation)
    c.put("b", api(), None, c.generation)
    c.discard("a")
    assert c.get("a") is None and c.get("b") is not None
    generation = c.generation
    c.clear()
    assert len(c) == 0 and c.generation != generation
