"""LocalAuth's signing key: loaded by the server at start, never an empty key."""

from __future__ import annotations

import jwt
import pytest

from app.auth.local import ALGORITHM, LocalAuth
from app.models.user import User
from app.settings import Settings
from app.storage.db import Database
from tests.server import JWT_SECRET, migrate, sqlite_url


def _user() -> User:
    return User(id=7, username="someone")


async def test_refuses_to_sign_before_the_key_is_loaded() -> None:
    """An empty HS256 key would let anyone forge tokens."""
    db = Database(sqlite_url())
    try:
        auth = LocalAuth(Settings.from_env(env={}), db, secret="")
        with pytest.raises(RuntimeError, match="no signing key"):
            auth.issue_access(_user(), 1)
    finally:
        await db.close()


async def test_load_key_uses_jwt_secret() -> None:
    db = Database(sqlite_url())
    try:
        auth = LocalAuth(Settings.from_env(env={"JWT_SECRET": JWT_SECRET}), db)
        await auth.load_key()
        token, _ttl = auth.issue_access(_user(), 1)
    finally:
        await db.close()
    claims = jwt.decode(token, JWT_SECRET, algorithms=[ALGORITHM], options={"verify_iss": False})
    assert claims["sub"] == "7"


async def test_load_key_shares_the_stored_key_between_instances() -> None:
    """Without JWT_SECRET the key is created once in the database; every instance loads the same."""
    url = sqlite_url()
    migrate(url)
    first_db, second_db = Database(url), Database(url)
    try:
        first = LocalAuth(Settings.from_env(env={}), first_db)
        second = LocalAuth(Settings.from_env(env={}), second_db)
        await first.load_key()
        await second.load_key()
        token, _ttl = first.issue_access(_user(), 1)
        assert second.verify(token)["sub"] == "7"
    finally:
        await first_db.close()
        await second_db.close()
