"""A Keycloak-compatible OIDC server for tests, on a loopback port.

Watchpost talks to it exactly as it talks to Keycloak: through python-keycloak
and plain HTTP, on Keycloak's paths (``/realms/{realm}/protocol/openid-connect/…``),
with Keycloak's error bodies and token claim shapes. Tokens are real RS256 JWTs
signed with RSA keys generated here, so signature, ``kid`` and JWKS handling are
exercised for real.

Use it as a context manager (or call ``start()``/``stop()``)::

    with OIDCServer() as idp:
        idp.add_user("alice", "pw", realm_roles=["admin"], groups=["/tenants/acme/editor"])
        ...  # point the code under test at idp.base_url, idp.realm, idp.client_id

Knobs for failure tests:
- ``set_down(True, mode="refuse")`` closes the listening socket (connection refused);
  ``mode="hang"`` keeps accepting but never answers; ``set_down(False)`` restores it.
- ``rotate_key(keep_old=…)`` starts signing with a new RSA key under a new ``kid``.
- ``issue_token(username, alg=…, key=…, kid=…, **claim_overrides)`` mints tokens
  directly, including deliberately bad ones (``alg="none"``, HS256 with the public
  key PEM as the secret, foreign signing key, custom ``exp``/``iss``…).
- ``revoke_session(sid=…)`` / ``revoke_session(username=…)`` ends sessions as an admin would.
- ``hits`` counts requests per endpoint (``hits["certs"]`` is the JWKS fetch count).

The server runs uvicorn in a background thread with its own event loop; every
public method is safe to call from the test's thread or event loop.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hashlib
import hmac
import json
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs

import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

DownMode = Literal["refuse", "hang"]

# Roles every Keycloak user carries through the realm's default composite role.
_DEFAULT_REALM_ROLES = ("offline_access", "uma_authorization")


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key (for foreign-signature tests and rotation)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unsafe_encode(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """Hand-build an HS256 or unsigned JWT; PyJWT refuses to make these attack tokens."""
    head = _b64url(json.dumps(header, separators=(",", ":")).encode())
    body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    if secret is None:
        return f"{head}.{body}."
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[header["alg"]]
    return f"{head}.{body}.{_b64url(hmac.new(secret, signing_input, digest).digest())}"


@dataclass
class _Key:
    kid: str
    private: rsa.RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        data.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return data


@dataclass
class User:
    username: str
    password: str
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))
    realm_roles: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    client_roles: list[str] = field(default_factory=list)
    email: str | None = None


@dataclass
class Session:
    sid: str
    username: str
    active: bool = True


class _OAuthError(Exception):
    """An OAuth error answered in Keycloak's body shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "error_description": self.description}, self.status)


class OIDCServer:
    """Keycloak look-alike for one realm and one client; see the module docstring."""

    def __init__(
        self,
        *,
        realm: str = "watchpost",
        client_id: str = "watchpost-dashboard",
        client_secret: str | None = None,
        access_token_lifespan: int = 300,
        refresh_token_lifespan: int = 1800,
        audience: list[str] | None = None,
        frontend_url: str | None = None,
    ) -> None:
        self.realm = realm
        self.client_id = client_id
        # None means a public client (like the dashboard); a string makes it confidential.
        self.client_secret = client_secret
        self.access_token_lifespan = access_token_lifespan
        self.refresh_token_lifespan = refresh_token_lifespan
        # The access token ``aud``; Keycloak puts "account" first for the account console.
        self.audience = audience if audience is not None else ["account", client_id]
        # Keycloak's KC_HOSTNAME: the public URL stamped into ``iss`` when clients reach
        # the server by another address (None: the address it is reached on).
        self.frontend_url = frontend_url
        self.hits: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._users: dict[str, User] = {}
        self._sessions: dict[str, Session] = {}
        self._keys: list[_Key] = [_Key(kid=_b64url(secrets.token_bytes(16)), private=new_rsa_key())]
        self._active_kid = self._keys[0].kid
        # Refresh tokens are HMAC-signed with a realm secret, as Keycloak does.
        self._refresh_secret = secrets.token_bytes(64)
        self._down: DownMode | None = None
        self._port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> OIDCServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("OIDCServer is not started; call start() or use it as a context manager.")
        return f"http://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return f"{self.frontend_url or self.base_url}/realms/{self.realm}"

    @property
    def jwks_hits(self) -> int:
        return self.hits["certs"]

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port or 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("OIDCServer did not start within 10 s")
            time.sleep(0.01)
        self._server, self._thread = server, thread

    def stop(self) -> None:
        with self._lock:
            if self._down == "hang":
                self._down = None  # release hung requests so shutdown can finish
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def set_down(self, down: bool, *, mode: DownMode = "refuse") -> None:
        """Make the IdP unreachable: ``refuse`` closes the port, ``hang`` never answers."""
        if down:
            if mode == "refuse":
                self.stop()
            with self._lock:
                self._down = mode
        else:
            with self._lock:
                was = self._down
                self._down = None
            if was == "refuse":
                self.start()

    # ------------------------------------------------------------------ realm admin

    def add_user(
        self,
        username: str,
        password: str,
        realm_roles: list[str] | None = None,
        groups: list[str] | None = None,
        *,
        client_roles: list[str] | None = None,
        email: str | None = None,
    ) -> User:
        user = User(
            username=username,
            password=password,
            realm_roles=list(realm_roles or []),
            groups=list(groups or []),
            client_roles=list(client_roles or []),
            email=email,
        )
        with self._lock:
            self._users[username] = user
        return user

    def user(self, username: str) -> User:
        with self._lock:
            return self._users[username]

    @property
    def active_kid(self) -> str:
        return self._active_kid

    def active_private_key(self) -> rsa.RSAPrivateKey:
        return self._key(self._active_kid).private

    def rotate_key(self, *, keep_old: bool = True) -> str:
        """Sign with a new RSA key from now on; returns its ``kid``.

        ``keep_old=True`` keeps the previous keys in the JWKS (Keycloak's normal
        rotation: old tokens stay verifiable); ``False`` removes them.
        """
        key = _Key(kid=_b64url(secrets.token_bytes(16)), private=new_rsa_key())
        with self._lock:
            self._keys = [*self._keys, key] if keep_old else [key]
            self._active_kid = key.kid
        return key.kid

    def revoke_session(self, sid: str | None = None, *, username: str | None = None) -> int:
        """End one session by ``sid``, or every session of ``username``; returns how many."""
        count = 0
        with self._lock:
            for session in self._sessions.values():
                if session.active and (session.sid == sid or (username and session.username == username)):
                    session.active = False
                    count += 1
        return count

    def session_active(self, sid: str) -> bool:
        with self._lock:
            session = self._sessions.get(sid)
            return bool(session and session.active)

    def issue_token(
        self,
        username: str,
        *,
        alg: str = "RS256",
        key: rsa.RSAPrivateKey | bytes | None = None,
        kid: str | None = None,
        sid: str | None = None,
        **overrides: Any,
    ) -> str:
        """Mint an access token for ``username`` without a login, good or deliberately bad.

        ``overrides`` replace claims (``exp=…``, ``iss=…``, ``aud=…``); an override of
        ``None`` removes the claim. ``alg``: ``RS256`` (default, signed with ``key`` or
        the active realm key), ``none`` (unsigned), or ``HS256``/``HS384``/``HS512``
        with ``key`` bytes as the HMAC secret (default: the realm public key PEM —
        the classic algorithm-confusion attack). ``kid`` defaults to the active key's.
        """
        with self._lock:
            user = self._users[username]
            if sid is None:
                sid = self._new_session(username).sid
            claims = self._access_claims(user, sid, int(time.time()))
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        header = {"alg": alg, "typ": "JWT", "kid": kid or self._active_kid}
        if alg == "RS256":
            signer = key if isinstance(key, rsa.RSAPrivateKey) else self.active_private_key()
            return jwt.encode(claims, signer, algorithm="RS256", headers={"kid": header["kid"]})
        if alg == "none":
            return _unsafe_encode(header, claims, None)
        secret = key if isinstance(key, bytes) else public_pem(self.active_private_key())
        return _unsafe_encode(header, claims, secret)

    # ------------------------------------------------------------------ token minting

    def _key(self, kid: str) -> _Key:
        for key in self._keys:
            if key.kid == kid:
                return key
        raise KeyError(kid)

    def _new_session(self, username: str) -> Session:
        session = Session(sid=str(uuid.uuid4()), username=username)
        self._sessions[session.sid] = session
        return session

    def _access_claims(self, user: User, sid: str, now: int) -> dict[str, Any]:
        resource_access: dict[str, Any] = {
            "account": {"roles": ["manage-account", "manage-account-links", "view-profile"]}
        }
        if user.client_roles:
            resource_access[self.client_id] = {"roles": list(user.client_roles)}
        claims: dict[str, Any] = {
            "exp": now + self.access_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.audience[0] if len(self.audience) == 1 else list(self.audience),
            "sub": user.sub,
            "typ": "Bearer",
            "azp": self.client_id,
            "sid": sid,
            "acr": "1",
            "allowed-origins": ["*"],
            "realm_access": {
                "roles": [f"default-roles-{self.realm}", *_DEFAULT_REALM_ROLES, *user.realm_roles]
            },
            "resource_access": resource_access,
            "scope": "openid profile email",
            "email_verified": user.email is not None,
            "preferred_username": user.username,
            "groups": list(user.groups),
        }
        if user.email:
            claims["email"] = user.email
        return claims

    def _token_response(self, user: User, session: Session) -> dict[str, Any]:
        now = int(time.time())
        with self._lock:
            access = self._access_claims(user, session.sid, now)
            key = self._key(self._active_kid)
        refresh = {
            "exp": now + self.refresh_token_lifespan,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": user.sub,
            "typ": "Refresh",
            "azp": self.client_id,
            "sid": session.sid,
            "scope": access["scope"],
        }
        id_token = {
            "exp": access["exp"],
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": user.sub,
            "typ": "ID",
            "azp": self.client_id,
            "sid": session.sid,
            "preferred_username": user.username,
        }
        return {
            "access_token": jwt.encode(access, key.private, algorithm="RS256", headers={"kid": key.kid}),
            "expires_in": self.access_token_lifespan,
            "refresh_expires_in": self.refresh_token_lifespan,
            "refresh_token": jwt.encode(refresh, self._refresh_secret, algorithm="HS512"),
            "token_type": "Bearer",
            "id_token": jwt.encode(id_token, key.private, algorithm="RS256", headers={"kid": key.kid}),
            "not-before-policy": 0,
            "session_state": session.sid,
            "scope": access["scope"],
        }

    def _check_access_token(self, token: str) -> dict[str, Any] | None:
        """Claims of an access token this realm would still honour, else None."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            with self._lock:
                public = self._key(kid).private.public_key()
            claims: dict[str, Any] = jwt.decode(
                token, public, algorithms=["RS256"], issuer=self.issuer, options={"verify_aud": False}
            )
        except (jwt.PyJWTError, KeyError):
            return None
        if claims.get("typ") != "Bearer" or not self.session_active(str(claims.get("sid"))):
            return None
        return claims

    def _check_refresh_token(self, token: str) -> tuple[User, Session]:
        try:
            claims = jwt.decode(token, self._refresh_secret, algorithms=["HS512"], audience=self.issuer)
        except jwt.ExpiredSignatureError as exc:
            raise _OAuthError(400, "invalid_grant", "Token is not active") from exc
        except jwt.PyJWTError as exc:
            raise _OAuthError(400, "invalid_grant", "Invalid refresh token") from exc
        if claims.get("typ") != "Refresh" or claims.get("azp") != self.client_id:
            raise _OAuthError(400, "invalid_grant", "Invalid refresh token")
        with self._lock:
            session = self._sessions.get(claims["sid"])
            if session is None or not session.active:
                raise _OAuthError(400, "invalid_grant", "Session not active")
            return self._users[session.username], session

    # ------------------------------------------------------------------ HTTP

    def _app(self) -> Starlette:
        prefix = "/realms/{realm}"
        oidc = prefix + "/protocol/openid-connect"
        routes = [
            Route(prefix, self._realm_info, methods=["GET"]),
            Route(prefix + "/.well-known/openid-configuration", self._well_known, methods=["GET"]),
            Route(oidc + "/certs", self._certs, methods=["GET"]),
            Route(oidc + "/token", self._token, methods=["POST"]),
            Route(oidc + "/token/introspect", self._introspect, methods=["POST"]),
            Route(oidc + "/logout", self._logout, methods=["POST"]),
            Route(oidc + "/userinfo", self._userinfo, methods=["GET", "POST"]),
        ]
        app = Starlette(routes=routes)
        outer = self

        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            # "hang" mode: accept the request and answer nothing until restored; by then
            # the client has usually given up, so the late 503 goes nowhere.
            if outer._down == "hang":
                while outer._down == "hang":  # noqa: ASYNC110 - flipped from another thread
                    await asyncio.sleep(0.05)
                await JSONResponse({"error": "unavailable"}, 503)(scope, receive, send)
                return
            await app(scope, receive, send)

        return asgi  # type: ignore[return-value]

    def _realm_or_404(self, request: Request, endpoint: str) -> JSONResponse | None:
        self.hits[endpoint] += 1
        if request.path_params["realm"] != self.realm:
            return JSONResponse({"error": "Realm does not exist"}, 404)
        return None

    async def _form(self, request: Request) -> dict[str, str]:
        body = (await request.body()).decode()
        return {name: values[-1] for name, values in parse_qs(body, keep_blank_values=True).items()}

    def _authenticate_client(self, request: Request, form: dict[str, str]) -> None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != self.client_id:
            raise _OAuthError(401, "invalid_client", "Invalid client or Invalid client credentials")
        if self.client_secret is not None and secret != self.client_secret:
            raise _OAuthError(401, "unauthorized_client", "Invalid client or Invalid client credentials")

    async def _realm_info(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "realm")) is not None:
            return missing
        der = (
            self.active_private_key()
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        return JSONResponse(
            {
                "realm": self.realm,
                "public_key": base64.b64encode(der).decode(),
                "token-service": f"{self.issuer}/protocol/openid-connect",
                "account-service": f"{self.issuer}/account",
                "tokens-not-before": 0,
            }
        )

    async def _well_known(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "well-known")) is not None:
            return missing
        oidc = f"{self.issuer}/protocol/openid-connect"
        return JSONResponse(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{oidc}/auth",
                "token_endpoint": f"{oidc}/token",
                "introspection_endpoint": f"{oidc}/token/introspect",
                "userinfo_endpoint": f"{oidc}/userinfo",
                "end_session_endpoint": f"{oidc}/logout",
                "jwks_uri": f"{oidc}/certs",
                "grant_types_supported": ["password", "refresh_token"],
                "response_types_supported": ["code", "token"],
                "subject_types_supported": ["public", "pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "scopes_supported": ["openid", "profile", "email"],
            }
        )

    async def _certs(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "certs")) is not None:
            return missing
        with self._lock:
            keys = [key.jwk() for key in self._keys]
        # Keycloak also publishes an encryption key; verifiers must skip it.
        enc = dict(keys[0], kid="enc-" + keys[0]["kid"], use="enc", alg="RSA-OAEP")
        return JSONResponse({"keys": [*keys, enc]})

    async def _token(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "token")) is not None:
            return missing
        form = await self._form(request)
        try:
            self._authenticate_client(request, form)
            grant = form.get("grant_type")
            if grant == "password":
                with self._lock:
                    user = self._users.get(form.get("username", ""))
                    if user is None or not hmac.compare_digest(user.password, form.get("password", "")):
                        raise _OAuthError(401, "invalid_grant", "Invalid user credentials")
                    session = self._new_session(user.username)
            elif grant == "refresh_token":
                user, session = self._check_refresh_token(form.get("refresh_token", ""))
            else:
                raise _OAuthError(400, "unsupported_grant_type", "Unsupported grant_type")
        except _OAuthError as exc:
            return exc.response()
        return JSONResponse(self._token_response(user, session))

    async def _logout(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "logout")) is not None:
            return missing
        form = await self._form(request)
        try:
            self._authenticate_client(request, form)
            _, session = self._check_refresh_token(form.get("refresh_token", ""))
        except _OAuthError as exc:
            if exc.error == "invalid_grant":
                return _OAuthError(400, "invalid_grant", "Invalid refresh token").response()
            return exc.response()
        self.revoke_session(session.sid)
        return Response(status_code=204)

    async def _userinfo(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "userinfo")) is not None:
            return missing
        auth = request.headers.get("authorization", "")
        claims = self._check_access_token(auth[7:]) if auth.lower().startswith("bearer ") else None
        if claims is None:
            return _OAuthError(401, "invalid_token", "Token verification failed").response()
        info = {name: claims[name] for name in ("sub", "preferred_username", "email") if name in claims}
        return JSONResponse({**info, "email_verified": claims.get("email_verified", False)})

    async def _introspect(self, request: Request) -> Response:
        if (missing := self._realm_or_404(request, "introspect")) is not None:
            return missing
        form = await self._form(request)
        try:
            self._authenticate_client(request, form)
        except _OAuthError as exc:
            return exc.response()
        if self.client_secret is None:
            # Keycloak allows introspection only for confidential clients.
            return JSONResponse({"error": "invalid_request", "error_description": "Client not allowed."}, 403)
        claims = self._check_access_token(form.get("token", ""))
        if claims is None:
            return JSONResponse({"active": False})
        return JSONResponse(
            {
                **claims,
                "client_id": self.client_id,
                "username": claims.get("preferred_username"),
                "token_type": "Bearer",
                "active": True,
            }
        )
