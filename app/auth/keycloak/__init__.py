"""Keycloak mode (``KEYCLOAK_BASE_URL`` set): Watchpost trusts a Keycloak realm for identity.

- :mod:`~app.auth.keycloak.provider`: login, refresh, logout and local JWT verification.
- :mod:`~app.auth.keycloak.identity`: verified tokens to Watchpost users and memberships.
- :mod:`~app.auth.keycloak.sessions`: ending sessions and the periodic session check.
- :mod:`~app.auth.keycloak.mode`: wiring at app start and shutdown.
"""
