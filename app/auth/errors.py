"""Authentication failures, mapped to close codes / HTTP statuses at the edge."""

from __future__ import annotations


class AuthError(Exception):
    """Base of every authentication failure; the message is safe to show."""


class InvalidCredentials(AuthError):
    """Wrong username/password, or an invalid / revoked refresh token."""


class InvalidToken(AuthError):
    """The token is malformed, wrongly signed, revoked or not for us."""


class TokenExpired(InvalidToken):
    """The token's ``exp`` has passed."""


class UnknownKey(InvalidToken):
    """The token names a signing key (``kid``) not in the cached JWKS."""

    def __init__(self, kid: str | None) -> None:
        super().__init__(f"unknown signing key {kid!r}")
        self.kid = kid


class NotAMember(AuthError):
    """The user is not a member of the requested tenant (close 4003)."""


class IdentityUnavailable(AuthError):
    """The identity provider cannot be reached (HTTP 503 / RSPCode UNAVAILABLE)."""
