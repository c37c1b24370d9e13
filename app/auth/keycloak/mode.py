"""Keycloak mode: selected when ``KEYCLOAK_BASE_URL`` is set; wired at app start.

``start_keycloak`` builds the provider from settings, loads the realm keys
(Keycloak being down is tolerated: keys load on first use), plugs token
verification into the authenticator, exposes the provider to the HTTP login
routes as ``services.keycloak`` and starts the session watch.
``stop_keycloak`` undoes it on shutdown.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.auth.keycloak.identity import KeycloakIdentity
from app.auth.keycloak.provider import KeycloakProvider
from app.auth.keycloak.sessions import KeycloakSessionWatch
from app.events import CONTROL_TOPIC

if TYPE_CHECKING:
    from app.context import Services


def build_provider(services: Services) -> KeycloakProvider:
    settings = services.settings
    assert settings.keycloak_base_url is not None
    return KeycloakProvider(
        base_url=settings.keycloak_base_url,
        realm=settings.keycloak_realm,
        client_id=settings.keycloak_client_id,
        client_secret=settings.keycloak_client_secret or None,
        admin_role=settings.keycloak_admin_role,
        audience=settings.keycloak_audience,
        issuer=settings.keycloak_issuer,
        leeway=settings.keycloak_leeway,
        http_timeout=settings.keycloak_timeout,
        jwks_min_refresh_interval=settings.keycloak_jwks_min_refresh_interval,
        tenant_roles=tuple(services.policy.roles),
    )


async def start_keycloak(services: Services) -> None:
    """Call once from the app's startup; does nothing unless Keycloak is configured."""
    if not services.settings.keycloak_enabled:
        return
    provider = build_provider(services)
    await provider.start()
    identity = KeycloakIdentity(provider)
    services.authenticator.external = identity
    services.keycloak = provider
    hub = services.hub
    watch = KeycloakSessionWatch(
        provider,
        identity,
        live_sessions=lambda: hub.session_ids("keycloak"),
        announce=hub.announce,
        interval=float(services.settings.keycloak_introspect_interval),
    )
    services.broker.add_listener(CONTROL_TOPIC, watch.on_control)
    watch.start()
    services.keycloak_watch = watch


async def stop_keycloak(services: Services) -> None:
    """Call once on shutdown, after connections are drained."""
    watch, services.keycloak_watch = services.keycloak_watch, None
    if watch is not None:
        await watch.stop()
        services.broker.remove_listener(CONTROL_TOPIC, watch.on_control)
    provider, services.keycloak = services.keycloak, None
    if provider is not None:
        await provider.close()
