"""KeycloakProvider against a Keycloak-compatible OIDC server over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.auth.errors import IdentityUnavailable, InvalidCredentials, InvalidToken, TokenExpired, UnknownKey
from app.auth.keycloak.provider import KeycloakProvider, parse_tenant_groups
from tests.oidc_server import OIDCServer, new_rsa_key


@pytest.fixture
def idp() -> Iterator[OIDCServer]:
    with OIDCServer() as server:
        server.add_user(
            "alice",
            "alice-pw",
            realm_roles=["admin"],
            groups=["/tenants/acme/editor", "/tenants/beta/viewer", "/staff"],
        )
        server.add_user("bob", "bob-pw")
        yield server


def make_provider(idp: OIDCServer, **kwargs: Any) -> KeycloakProvider:
    options: dict[str, Any] = {"http_timeout": 2.0, "jwks_min_refresh_interval": 10.0, **kwargs}
    return KeycloakProvider(base_url=idp.base_url, realm=idp.realm, client_id=idp.client_id, **options)


@pytest.fixture
async def provider(idp: OIDCServer) -> AsyncIterator[KeycloakProvider]:
    prov = make_provider(idp)
    await prov.start()
    yield prov
    await prov.close()


# ---------------------------------------------------------------- login, refresh, logout


async def test_login_returns_tokens_with_keycloak_identity(
    idp: OIDCServer, provider: KeycloakProvider
) -> None:
    tokens = await provider.login("alice", "alice-pw")
    assert tokens.token_type == "Bearer"
    assert tokens.expires_in == 300 and tokens.refresh_expires_in == 1800
    claims = provider.verify(tokens.access_token)
    assert claims.subject == idp.user("alice").sub
    assert claims.username == "alice"
    assert claims.is_platform_admin is True
    assert claims.tenant_roles == {"acme": "editor", "beta": "viewer"}
    assert claims.session_id and idp.session_active(claims.session_id)
    assert abs(claims.expires_at - (time.time() + 300)) < 30
    assert claims.raw["azp"] == idp.client_id


async def test_user_without_admin_role_is_not_platform_admin(provider: KeycloakProvider) -> None:
    claims = provider.verify((await provider.login("bob", "bob-pw")).access_token)
    assert claims.is_platform_admin is False
    assert claims.tenant_roles == {}


async def test_admin_role_name_is_configurable(idp: OIDCServer) -> None:
    idp.add_user("carol", "pw", realm_roles=["watchpost-admin"])
    prov = make_provider(idp, admin_role="watchpost-admin")
    await prov.start()
    try:
        assert prov.verify(idp.issue_token("carol")).is_platform_admin is True
        assert prov.verify(idp.issue_token("alice")).is_platform_admin is False
    finally:
        await prov.close()


@pytest.mark.parametrize(("username", "password"), [("alice", "wrong"), ("nobody", "alice-pw")])
async def test_login_with_wrong_credentials_is_refused(
    provider: KeycloakProvider, username: str, password: str
) -> None:
    with pytest.raises(InvalidCredentials):
        await provider.login(username, password)


async def test_login_when_idp_refuses_connections_fails_fast(
    idp: OIDCServer, provider: KeycloakProvider
) -> None:
    idp.set_down(True, mode="refuse")
    started = time.monotonic()
    with pytest.raises(IdentityUnavailable, match="unreachable"):
        await provider.login("alice", "alice-pw")
    assert time.monotonic() - started < 2.0
    idp.set_down(False)
    assert (await provider.login("alice", "alice-pw")).access_token


async def test_login_when_idp_hangs_is_bounded_by_http_timeout(idp: OIDCServer) -> None:
    prov = make_provider(idp, http_timeout=1.0)
    await prov.start()
    try:
        idp.set_down(True, mode="hang")
        started = time.monotonic()
        with pytest.raises(IdentityUnavailable):
            await prov.login("alice", "alice-pw")
        assert time.monotonic() - started < 3.0
    finally:
        idp.set_down(False)
        await prov.close()


async def test_wrong_client_secret_is_reported_as_configuration_problem() -> None:
    with OIDCServer(client_secret="right") as idp:
        idp.add_user("alice", "pw")
        prov = make_provider(idp, client_secret="wrong")
        try:
            with pytest.raises(IdentityUnavailable, match="KEYCLOAK_CLIENT_SECRET"):
                await prov.login("alice", "pw")
        finally:
            await prov.close()


async def test_refresh_returns_new_valid_tokens(provider: KeycloakProvider) -> None:
    first = await provider.login("alice", "alice-pw")
    second = await provider.refresh(first.refresh_token)
    assert second.access_token != first.access_token
    claims = provider.verify(second.access_token)
    assert claims.username == "alice"
    assert claims.session_id == provider.verify(first.access_token).session_id


async def test_refresh_with_garbage_token_is_invalid_credentials(provider: KeycloakProvider) -> None:
    with pytest.raises(InvalidCredentials):
        await provider.refresh("not-a-refresh-token")


async def test_logout_ends_the_session(idp: OIDCServer, provider: KeycloakProvider) -> None:
    tokens = await provider.login("alice", "alice-pw")
    sid = provider.verify(tokens.access_token).session_id
    assert await provider.logout(tokens.refresh_token) == sid
    assert sid is not None and not idp.session_active(sid)
    with pytest.raises(InvalidCredentials):
        await provider.refresh(tokens.refresh_token)
    # Logging out an ended session again is not an error, and names no session.
    assert await provider.logout(tokens.refresh_token) is None


# ---------------------------------------------------------------- verification


async def test_expired_token_is_refused(idp: OIDCServer, provider: KeycloakProvider) -> None:
    now = int(time.time())
    with pytest.raises(TokenExpired):
        provider.verify(idp.issue_token("alice", iat=now - 400, exp=now - 60))


async def test_expiry_within_leeway_is_accepted(idp: OIDCServer, provider: KeycloakProvider) -> None:
    now = int(time.time())
    assert provider.verify(idp.issue_token("alice", iat=now - 300, exp=now - 3)).username == "alice"


async def test_token_not_yet_valid_is_refused(idp: OIDCServer, provider: KeycloakProvider) -> None:
    now = int(time.time())
    with pytest.raises(InvalidToken, match="not valid yet"):
        provider.verify(idp.issue_token("alice", nbf=now + 120))


async def test_wrong_signature_is_refused(idp: OIDCServer, provider: KeycloakProvider) -> None:
    forged = idp.issue_token("alice", key=new_rsa_key())  # same kid, foreign key
    with pytest.raises(InvalidToken, match="signature") as info:
        await provider.verify_async(forged)
    assert not isinstance(info.value, UnknownKey | TokenExpired)


async def test_wrong_issuer_is_refused(idp: OIDCServer, provider: KeycloakProvider) -> None:
    token = idp.issue_token("alice", iss="http://127.0.0.1:1/realms/watchpost")
    with pytest.raises(InvalidToken, match="issued"):
        provider.verify(token)
    with pytest.raises(InvalidToken):
        provider.verify(idp.issue_token("alice", iss=None))


@pytest.mark.parametrize("alg", ["none", "HS256", "HS512"])
async def test_non_rs256_tokens_are_refused(idp: OIDCServer, provider: KeycloakProvider, alg: str) -> None:
    # HS* tokens are HMAC-signed with the realm's public key PEM (algorithm confusion).
    token = idp.issue_token("alice", alg=alg)
    hits = idp.jwks_hits
    with pytest.raises(InvalidToken, match="Algorithm"):
        await provider.verify_async(token)
    assert idp.jwks_hits == hits


@pytest.mark.parametrize(
    ("overrides", "accepted"),
    [
        ({"aud": ["account"], "azp": "other-client"}, False),
        ({"aud": "account", "azp": None}, False),
        ({"aud": ["account"]}, True),  # azp is still our client
        ({"aud": "watchpost-dashboard", "azp": "other-client"}, True),
    ],
)
async def test_audience_or_azp_must_name_our_client(
    idp: OIDCServer, provider: KeycloakProvider, overrides: dict[str, Any], accepted: bool
) -> None:
    token = idp.issue_token("alice", **overrides)
    if accepted:
        assert provider.verify(token).username == "alice"
    else:
        with pytest.raises(InvalidToken, match="aud/azp"):
            provider.verify(token)


@pytest.mark.parametrize("typ", ["ID", "Refresh"])
async def test_non_access_tokens_are_refused(idp: OIDCServer, provider: KeycloakProvider, typ: str) -> None:
    with pytest.raises(InvalidToken, match="not an access token"):
        provider.verify(idp.issue_token("alice", typ=typ))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x.y.z"])
async def test_malformed_tokens_are_refused(provider: KeycloakProvider, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        await provider.verify_async(garbage)


async def test_refresh_token_is_not_accepted_as_access_token(provider: KeycloakProvider) -> None:
    tokens = await provider.login("alice", "alice-pw")
    with pytest.raises(InvalidToken):
        await provider.verify_async(tokens.refresh_token)


async def test_issuer_is_discovered_when_keycloak_has_a_public_hostname() -> None:
    # As in docker-compose: reached at one address, stamping another into ``iss``.
    with OIDCServer(frontend_url="http://localhost:18080") as idp:
        idp.add_user("alice", "pw")
        prov = make_provider(idp)
        await prov.start()
        try:
            token = (await prov.login("alice", "pw")).access_token
            assert prov.issuer == "http://localhost:18080/realms/watchpost"
            assert prov.verify(token).username == "alice"
            with pytest.raises(InvalidToken, match="issued"):
                prov.verify(idp.issue_token("alice", iss=f"{idp.base_url}/realms/watchpost"))
        finally:
            await prov.close()


async def test_pinned_issuer_is_not_overridden_by_discovery(idp: OIDCServer) -> None:
    prov = make_provider(idp, issuer="http://localhost:18080/realms/watchpost")
    await prov.start()
    try:
        assert idp.hits["well-known"] == 0
        with pytest.raises(InvalidToken, match="issued"):
            prov.verify(idp.issue_token("alice"))
    finally:
        await prov.close()


# ---------------------------------------------------------------- keys: rotation and refresh bounds


@pytest.mark.parametrize("keep_old", [True, False])
async def test_key_rotation_is_accepted_without_restart(idp: OIDCServer, keep_old: bool) -> None:
    prov = make_provider(idp, jwks_min_refresh_interval=0.3)
    await prov.start()
    try:
        old = (await prov.login("alice", "alice-pw")).access_token
        new_kid = idp.rotate_key(keep_old=keep_old)
        await asyncio.sleep(0.4)  # past the refresh bound that start() began
        new = (await prov.login("alice", "alice-pw")).access_token
        with pytest.raises(UnknownKey) as info:
            prov.verify(new)  # the local, network-free path cannot know the key yet
        assert info.value.kid == new_kid
        assert (await prov.verify_async(new)).username == "alice"
        assert prov.verify(new).username == "alice"  # now cached
        if keep_old:
            assert prov.verify(old).username == "alice"
        else:
            with pytest.raises(UnknownKey):
                await prov.verify_async(old)
    finally:
        await prov.close()


async def test_jwks_refresh_rate_is_bounded(idp: OIDCServer) -> None:
    prov = make_provider(idp, jwks_min_refresh_interval=0.5)
    await prov.start()
    try:
        assert idp.jwks_hits == 1
        await asyncio.sleep(0.6)
        bogus = [idp.issue_token("alice", kid=f"made-up-{i}") for i in range(20)]
        results = await asyncio.gather(*(prov.verify_async(t) for t in bogus), return_exceptions=True)
        assert all(isinstance(r, UnknownKey) for r in results)
        assert idp.jwks_hits == 2  # twenty unknown kids, one fetch
        # Inside the bound, unknown kids wait for the next allowed fetch and share it.
        started = time.monotonic()
        results = await asyncio.gather(*(prov.verify_async(t) for t in bogus), return_exceptions=True)
        assert all(isinstance(r, UnknownKey) for r in results)
        assert idp.jwks_hits == 3
        assert time.monotonic() - started >= 0.3
    finally:
        await prov.close()


async def test_unknown_key_from_another_issuer_is_refused_without_waiting(idp: OIDCServer) -> None:
    prov = make_provider(idp, jwks_min_refresh_interval=5.0)
    await prov.start()
    try:
        hits, started = idp.jwks_hits, time.monotonic()
        with pytest.raises(InvalidToken, match="not issued by"):
            await prov.verify_async(
                idp.issue_token("alice", kid="made-up", iss="https://evil.example/realms/x")
            )
        assert time.monotonic() - started < 1.0 and idp.jwks_hits == hits
    finally:
        await prov.close()


async def test_start_tolerates_idp_down_and_loads_keys_on_first_use(idp: OIDCServer) -> None:
    token = idp.issue_token("alice")
    idp.set_down(True)
    prov = make_provider(idp)
    try:
        await prov.start()  # logs, does not raise
        with pytest.raises(UnknownKey):
            prov.verify(token)
        with pytest.raises(IdentityUnavailable):
            await prov.verify_async(token)
        idp.set_down(False)
        await prov.refresh_jwks(force=True)
        assert (await prov.verify_async(token)).username == "alice"
    finally:
        idp.set_down(False)
        await prov.close()


async def test_first_use_after_failed_start_retries_at_once(idp: OIDCServer) -> None:
    token = idp.issue_token("alice")
    idp.set_down(True)
    prov = make_provider(idp)
    try:
        await prov.start()
        idp.set_down(False)
        assert (await prov.verify_async(token)).username == "alice"
    finally:
        await prov.close()


async def test_unknown_key_while_idp_down_is_unavailable(idp: OIDCServer) -> None:
    prov = make_provider(idp, jwks_min_refresh_interval=0.0)
    await prov.start()
    try:
        good = idp.issue_token("alice")
        idp.rotate_key()
        rotated = idp.issue_token("alice")
        idp.set_down(True)
        assert prov.verify(good).username == "alice"  # cached keys need no network
        with pytest.raises(IdentityUnavailable):
            await prov.verify_async(rotated)
    finally:
        idp.set_down(False)
        await prov.close()


# ---------------------------------------------------------------- revocation checks


async def test_introspect_active_for_public_client_follows_session(
    idp: OIDCServer, provider: KeycloakProvider
) -> None:
    tokens = await provider.login("alice", "alice-pw")
    assert await provider.introspect_active(tokens.access_token) is True
    await provider.logout(tokens.refresh_token)
    assert await provider.introspect_active(tokens.access_token) is False
    assert idp.hits["userinfo"] == 2


async def test_introspect_active_for_confidential_client_uses_introspection() -> None:
    with OIDCServer(client_secret="s3cret") as idp:
        idp.add_user("alice", "pw")
        prov = make_provider(idp, client_secret="s3cret")
        await prov.start()
        try:
            token = (await prov.login("alice", "pw")).access_token
            assert await prov.introspect_active(token) is True
            idp.revoke_session(username="alice")
            assert await prov.introspect_active(token) is False
            assert idp.hits["introspect"] == 2
        finally:
            await prov.close()


async def test_introspect_when_idp_down_is_unavailable(idp: OIDCServer, provider: KeycloakProvider) -> None:
    token = idp.issue_token("alice")
    idp.set_down(True)
    with pytest.raises(IdentityUnavailable):
        await provider.introspect_active(token)


# ---------------------------------------------------------------- groups


def test_tenant_groups_map_to_roles() -> None:
    groups = [
        "/tenants/acme/viewer",
        "/tenants/acme/admin",  # highest role of one tenant wins
        "/tenants/acme/editor",
        "/tenants/beta/owner",
        "/tenants/gamma/superuser",  # unknown role
        "/tenants/delta",  # no role
        "/tenants//editor",  # no slug
        "/tenants/eps/editor/extra",
        "tenants/zeta/editor",  # not a full path
        "/other/acme/editor",
        42,
    ]
    assert parse_tenant_groups(groups) == {"acme": "admin", "beta": "owner"}
