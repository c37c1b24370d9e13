"""Engine, sessions and pagination; one Database object per app."""

from app.storage.db import Database

__all__ = ["Database"]
