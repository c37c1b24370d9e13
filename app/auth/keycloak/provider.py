"""Keycloak identity: password login, refresh, logout, and local JWT verification.

Selected when ``KEYCLOAK_BASE_URL`` is set. Talks to Keycloak only through
python-keycloak (token, refresh, logout, certs, introspection/userinfo) and
verifies access tokens locally against the realm's cached JWKS — no network call
per connection.

Verification (``verify``) accepts only RS256 tokens signed by a key of the cached
key set (by ``kid``), with ``iss`` exactly the realm issuer, ``typ`` ``Bearer``
(ID and refresh tokens are refused), ``exp``/``nbf``/``iat`` checked with a small
leeway, and the configured audience in ``aud`` or our client id as ``azp``.
``verify_async`` additionally refreshes the key set once when a token names an
unknown ``kid`` — so Keycloak key rotation works without a restart — but never
more often than once per ``jwks_min_refresh_interval``, so tokens with made-up key
ids cannot turn us into a request amplifier against Keycloak. A token whose key is
unknown inside that bound waits for the next allowed refresh (at most the interval)
instead of being refused: right after a rotation, the first tokens signed with the
new key would otherwise fail. Every token waiting at the same time shares that one
refresh; a key still unknown after it is refused.

Roles and tenants:
- A platform administrator is a user holding the realm role ``admin_role``
  (``realm_access.roles``); this is re-read from every token, so it follows
  Keycloak immediately.
- Tenant roles come from group paths ``/tenants/<slug>/<role>`` in the
  ``groups`` claim (Keycloak's "Group Membership" mapper with "Full group path"
  on). They only *seed* our memberships table: when a subject (``sub``) first
  connects, its user row is created with a membership for each such group of an
  existing tenant (``app.auth.keycloak.identity``). After that the memberships
  table is the source of truth — MEMBER_ADD/UPDATE/REMOVE decide, and later group
  changes in Keycloak do not touch it.

Revocation: tokens are verified locally, so a Keycloak-side logout cannot stop a
token by itself. Callers bound live connections by re-checking with
``introspect_active`` periodically (default every 60 s,
``KEYCLOAK_INTROSPECT_INTERVAL``) and by the token's own expiry (Keycloak's access
token lifespan, 5 minutes by default, after which an in-band refresh with a dead
session fails); see ``app.auth.keycloak.sessions`` for the exact bounds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm
from keycloak.exceptions import KeycloakConnectionError, KeycloakError
from keycloak.keycloak_openid import KeycloakOpenID

from app.auth.errors import (
    IdentityUnavailable,
    InvalidCredentials,
    InvalidToken,
    TokenExpired,
    UnknownKey,
)
from app.auth.local import TokenSet

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The role ladder tenant groups may name, lowest first (as in actions.json).
DEFAULT_TENANT_ROLES = ("viewer", "editor", "admin", "owner")
TENANT_GROUP_PREFIX = "/tenants/"
#: How often live connections should re-check their token with Keycloak.
DEFAULT_INTROSPECTION_INTERVAL = 60.0

# OAuth error codes that mean "these credentials / this token are no good".
_CREDENTIAL_ERRORS = frozenset({"invalid_grant", "invalid_token"})


def token_set_from_response(data: dict[str, Any]) -> TokenSet:
    """Our TokenSet from Keycloak's token endpoint answer (same shape as local login)."""
    try:
        return TokenSet(
            access_token=str(data["access_token"]),
            refresh_token=str(data["refresh_token"]),
            expires_in=int(data["expires_in"]),
            refresh_expires_in=int(data.get("refresh_expires_in", 0)),
            token_type=str(data.get("token_type", "Bearer")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IdentityUnavailable(
            "Keycloak answered the token request without the expected fields; check its logs."
        ) from exc


@dataclass(frozen=True)
class KeycloakClaims:
    """What Watchpost needs from a verified Keycloak access token."""

    subject: str
    username: str
    is_platform_admin: bool
    #: tenant slug → role, from ``/tenants/<slug>/<role>`` groups (seed only; see module docs).
    tenant_roles: dict[str, str]
    expires_at: float
    session_id: str | None
    raw: dict[str, Any]


def parse_tenant_groups(
    groups: Iterable[object], roles: tuple[str, ...] = DEFAULT_TENANT_ROLES
) -> dict[str, str]:
    """Map ``/tenants/<slug>/<role>`` group paths to ``{slug: role}``.

    Other groups and unknown roles are ignored; a user in several role groups of
    one tenant gets the highest of them.
    """
    result: dict[str, str] = {}
    for group in groups:
        if not isinstance(group, str) or not group.startswith(TENANT_GROUP_PREFIX):
            continue
        parts = group[len(TENANT_GROUP_PREFIX) :].split("/")
        if len(parts) != 2 or not parts[0] or parts[1] not in roles:
            continue
        slug, role = parts
        if slug not in result or roles.index(role) > roles.index(result[slug]):
            result[slug] = role
    return result


def _parse_jwks(certs: dict[str, Any]) -> dict[str, RSAPublicKey]:
    keys: dict[str, RSAPublicKey] = {}
    for jwk in certs.get("keys", []):
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA" or not isinstance(jwk.get("kid"), str):
            continue
        # Keycloak also publishes RSA-OAEP encryption keys; only signing keys verify tokens.
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        try:
            key = RSAAlgorithm.from_jwk(jwk)
        except (jwt.InvalidKeyError, ValueError, KeyError):
            log.warning("Skipping malformed JWKS key kid=%s from Keycloak", jwk.get("kid"))
            continue
        if isinstance(key, RSAPublicKey):
            keys[jwk["kid"]] = key
    return keys


def _oauth_error(exc: KeycloakError) -> str | None:
    try:
        body = json.loads(exc.response_body or b"")
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


class KeycloakProvider:
    """One realm and client of a Keycloak server; build once per app, ``start()``, ``close()``."""

    def __init__(
        self,
        *,
        base_url: str,
        realm: str,
        client_id: str,
        client_secret: str | None = None,
        admin_role: str = "admin",
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 10.0,
        http_timeout: float = 5.0,
        jwks_min_refresh_interval: float = 5.0,
        tenant_groups_claim: str = "groups",
        tenant_roles: tuple[str, ...] = DEFAULT_TENANT_ROLES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.realm = realm
        self.client_id = client_id
        self.client_secret = client_secret
        self.admin_role = admin_role
        self.audience = audience or client_id
        # Keycloak stamps its *frontend* URL (KC_HOSTNAME) into ``iss``, which differs from
        # base_url when we reach it by another address (http://keycloak:8080 in compose).
        # Unless pinned here, the issuer is read from the realm's OpenID discovery
        # document together with the first key set.
        self.issuer = issuer or f"{self.base_url}/realms/{realm}"
        self._issuer_known = issuer is not None
        self.leeway = leeway
        self.http_timeout = http_timeout
        self.jwks_min_refresh_interval = jwks_min_refresh_interval
        self.tenant_groups_claim = tenant_groups_claim
        self.tenant_roles = tenant_roles
        self._openid = self._new_client()
        # userinfo puts the user's token into python-keycloak's shared headers, so it
        # gets its own client and runs one at a time.
        self._userinfo_openid = self._new_client()
        self._userinfo_lock = asyncio.Lock()
        self._keys: dict[str, RSAPublicKey] = {}
        self._jwks_lock = asyncio.Lock()
        self._jwks_attempted_at: float | None = None  # monotonic time of the last fetch attempt
        self._jwks_attempts = 0  # fetch attempts finished: tells a waiter whether one ended meanwhile
        self._jwks_error: IdentityUnavailable | None = None  # why the last attempt failed, if it did

    def _new_client(self) -> KeycloakOpenID:
        return KeycloakOpenID(
            server_url=self.base_url + "/",
            realm_name=self.realm,
            client_id=self.client_id,
            client_secret_key=self.client_secret,
            # The outer asyncio.timeout is the real bound; this one caps each HTTP phase.
            timeout=max(1, math.ceil(self.http_timeout)),
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Fetch the realm's signing keys. Keycloak being down is logged, not fatal:
        the first token to verify retries the fetch."""
        try:
            await self.refresh_jwks(force=True)
        except IdentityUnavailable as exc:
            log.warning("Keycloak signing keys not loaded at start (%s); will retry on first use", exc)
            self._jwks_attempted_at = None  # let the first connection retry at once

    async def close(self) -> None:
        await self._openid.connection.aclose()
        await self._userinfo_openid.connection.aclose()

    # ------------------------------------------------------------------ HTTP calls

    async def _call(self, what: str, call: Awaitable[T]) -> T:
        """Run one python-keycloak call bounded by ``http_timeout``, mapping its errors."""
        try:
            async with asyncio.timeout(self.http_timeout):
                return await call
        except TimeoutError as exc:
            raise IdentityUnavailable(
                f"Keycloak did not answer {what} within {self.http_timeout:g} s; try again later."
            ) from exc
        except KeycloakConnectionError as exc:
            raise IdentityUnavailable(
                f"Keycloak is unreachable at {self.base_url}; try again later."
            ) from exc
        except KeycloakError as exc:
            code = exc.response_code or 0
            if code in (400, 401) and _oauth_error(exc) in _CREDENTIAL_ERRORS:
                raise InvalidCredentials(f"Keycloak refused {what}.") from exc
            if _oauth_error(exc) in ("invalid_client", "unauthorized_client"):
                raise IdentityUnavailable(
                    f"Keycloak refused client {self.client_id!r} for {what}; "
                    "check KEYCLOAK_CLIENT_ID and KEYCLOAK_CLIENT_SECRET."
                ) from exc
            raise IdentityUnavailable(f"Keycloak failed {what} (HTTP {code}); try again later.") from exc
        except TypeError as exc:  # python-keycloak's "unexpected response type"
            raise IdentityUnavailable(f"Keycloak gave an unexpected answer to {what}.") from exc

    async def login(self, username: str, password: str) -> TokenSet:
        """Password grant. Raises ``InvalidCredentials`` or ``IdentityUnavailable``."""
        data = await self._call("the login", self._openid.a_token(username, password))
        return token_set_from_response(data)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """Refresh grant. Raises ``InvalidCredentials`` when the session is gone."""
        data = await self._call("the token refresh", self._openid.a_refresh_token(refresh_token))
        return token_set_from_response(data)

    async def logout(self, refresh_token: str) -> str | None:
        """End the Keycloak session; returns its ``sid`` so the caller can close live
        connections of that session. A refresh token Keycloak no longer accepts means
        the session is already over: not an error, returns None."""
        try:
            await self._call("the logout", self._openid.a_logout(refresh_token))
        except InvalidCredentials:
            log.info("Keycloak logout with an already inactive refresh token")
            return None
        # Keycloak accepted the token, so its (unverifiable here, HMAC-signed) claims are genuine.
        try:
            sid = jwt.decode(refresh_token, options={"verify_signature": False}).get("sid")
        except jwt.PyJWTError:
            return None
        return sid if isinstance(sid, str) else None

    async def introspect_active(self, token: str) -> bool:
        """Ask Keycloak whether ``token``'s session is still alive (for live connections).

        Confidential clients use token introspection; public clients use userinfo,
        which Keycloak refuses for ended sessions. Raises ``IdentityUnavailable``
        when Keycloak cannot answer — callers then keep the connection, since
        the token's expiry still bounds it.
        """
        if self.client_secret:
            data = await self._call("token introspection", self._openid.a_introspect(token))
            return data.get("active") is True
        async with self._userinfo_lock:
            try:
                await self._call("the userinfo check", self._userinfo_openid.a_userinfo(token))
            except InvalidCredentials:
                return False
        return True

    # ------------------------------------------------------------------ verification

    async def refresh_jwks(self, *, force: bool = False) -> bool:
        """Re-fetch the realm's signing keys unless that happened less than
        ``jwks_min_refresh_interval`` ago. Returns whether a fetch happened; raises
        ``IdentityUnavailable`` when the latest attempt could not reach Keycloak."""
        async with self._jwks_lock:
            now = time.monotonic()
            recent = self._jwks_attempted_at is not None and (
                now - self._jwks_attempted_at < self.jwks_min_refresh_interval
            )
            if recent and not force:
                if self._jwks_error is not None:
                    raise IdentityUnavailable(str(self._jwks_error))
                return False
            await self._fetch_jwks()
            return True

    async def _fetch_jwks(self) -> None:
        """One fetch of the key set; the caller holds ``_jwks_lock``."""
        self._jwks_attempted_at = time.monotonic()
        try:
            if not self._issuer_known:
                await self._discover_issuer()
            certs = await self._call("the signing keys request", self._openid.a_certs())
        except IdentityUnavailable as exc:
            self._jwks_error = exc
            raise
        except InvalidCredentials as exc:
            self._jwks_error = IdentityUnavailable("Keycloak refused to publish the realm signing keys.")
            raise self._jwks_error from exc
        finally:
            # Counted when done: a token found unknown while this fetch was in flight
            # is answered by it rather than by a second fetch.
            self._jwks_attempts += 1
        self._jwks_error = None
        keys = _parse_jwks(certs)
        if not keys:
            log.warning("Keycloak published no usable RS256 signing keys; every token will be refused")
        self._keys = keys

    async def refresh_jwks_for_unknown_key(self, seen: int) -> None:
        """Make sure a fetch of the key set ends after ``seen`` fetches had ended
        (``_jwks_attempts`` read before the key was found missing).

        Waits (at most ``jwks_min_refresh_interval``) for the next fetch the bound
        allows, rather than refusing a token whose key Keycloak may have just added.
        Callers arriving while one waits queue on the lock and then share its
        result. Raises ``IdentityUnavailable`` when that fetch failed.
        """
        async with self._jwks_lock:
            if self._jwks_attempts == seen:
                if self._jwks_attempted_at is not None:
                    # The clock is monotonic, so this never exceeds the interval.
                    wait = self.jwks_min_refresh_interval - (time.monotonic() - self._jwks_attempted_at)
                    if wait > 0:
                        await asyncio.sleep(wait)
                await self._fetch_jwks()
            elif self._jwks_error is not None:
                raise IdentityUnavailable(str(self._jwks_error))

    async def _discover_issuer(self) -> None:
        config = await self._call("the OpenID discovery request", self._openid.a_well_known())
        issuer = config.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise IdentityUnavailable("Keycloak's discovery document names no issuer.")
        if issuer != self.issuer:
            log.info("Keycloak issues tokens as %s (reached at %s)", issuer, self.base_url)
        self.issuer = issuer
        self._issuer_known = True

    def verify(self, token: str) -> KeycloakClaims:
        """Verify a Keycloak access token locally against the cached keys.

        Raises ``InvalidToken`` (with a reason for the log), ``TokenExpired``, or
        ``UnknownKey`` — on the last, call ``verify_async`` to refresh keys once.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not a well-formed JWT.") from exc
        alg = header.get("alg")
        if alg != "RS256":
            raise InvalidToken(f"Algorithm {alg!r} is not accepted; Keycloak access tokens are RS256.")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownKey(kid if isinstance(kid, str) else None)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpired("The token has expired; refresh it and reconnect.") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("The token is not valid yet (nbf/iat in the future).") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken(f"The token was not issued by {self.issuer}.") from exc
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("The token signature does not match the realm key.") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token lacks the {exc.claim!r} claim.") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"The token is malformed ({exc}).") from exc
        return self._claims(claims)

    async def verify_async(self, token: str) -> KeycloakClaims:
        """``verify``, refreshing the key set once (rate-bounded) on an unknown ``kid``.

        Raises what ``verify`` raises, or ``IdentityUnavailable`` when the key set
        had to be refreshed but Keycloak could not be reached.
        """
        seen = self._jwks_attempts
        try:
            return self.verify(token)
        except UnknownKey:
            self._check_unverified_issuer(token)
            await self.refresh_jwks_for_unknown_key(seen)
            return self.verify(token)

    def _check_unverified_issuer(self, token: str) -> None:
        """Refuse at once, without waiting for a key fetch, a token that does not even
        claim our issuer (the claim is checked again, signed, once the key is known)."""
        if not self._issuer_known:
            return
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not a well-formed JWT.") from exc
        if claims.get("iss") != self.issuer:
            raise InvalidToken(f"The token was not issued by {self.issuer}.")

    def _claims(self, claims: dict[str, Any]) -> KeycloakClaims:
        if claims.get("typ") != "Bearer":
            raise InvalidToken(f"A {claims.get('typ')!r} token is not an access token.")
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        if self.audience not in audiences and claims.get("azp") != self.client_id:
            raise InvalidToken(f"The token is not meant for {self.audience!r} (aud/azp mismatch).")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise InvalidToken("The token has no subject.")
        realm_access = claims.get("realm_access")
        realm_roles = realm_access.get("roles") if isinstance(realm_access, dict) else None
        groups = claims.get(self.tenant_groups_claim)
        username = claims.get("preferred_username")
        sid = claims.get("sid")
        return KeycloakClaims(
            subject=subject,
            username=username if isinstance(username, str) and username else subject,
            is_platform_admin=isinstance(realm_roles, list) and self.admin_role in realm_roles,
            tenant_roles=parse_tenant_groups(groups if isinstance(groups, list) else [], self.tenant_roles),
            expires_at=float(claims["exp"]),
            session_id=sid if isinstance(sid, str) else None,
            raw=claims,
        )
