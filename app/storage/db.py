"""The async engine and session factory for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import Executable, Row, Table, event, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.errors import Unavailable
from app.storage.batch import BatchLoader, Fetch, padded

T = TypeVar("T")
log = logging.getLogger("watchpost.storage")


def make_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=echo, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets readers run while one writer commits; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_async_engine(
        url,
        echo=echo,
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"timeout": 10, "command_timeout": 30},
    )


def make_read_engine(url: str) -> AsyncEngine:
    """The pool for batched reads: few connections, autocommit, no pre-ping (see ``Database.read``)."""
    return create_async_engine(
        url,
        pool_size=4,
        max_overflow=4,
        pool_pre_ping=False,
        # Connections older than this are replaced on checkout (idle firewalls, failovers).
        pool_recycle=600,
        pool_timeout=10,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": 10, "command_timeout": 30},
    )


class Database:
    """Owns the engine; hands out sessions. Created by ``create_app``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, class_=AsyncSession)
        #: Batched point reads (:meth:`read`) use their own small pool: autocommit (no
        #: BEGIN/ROLLBACK round trips) and no ping per checkout; a read that meets a
        #: connection the server dropped is retried once on a fresh one instead.
        self.read_engine = self.engine if self.is_sqlite else make_read_engine(url)
        self._loaders: dict[str, BatchLoader[Any, Any]] = {}

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session; the caller commits. Connection failures become ``Unavailable``."""
        try:
            async with self.sessionmaker() as session:
                yield session
        except (OperationalError, DBAPIError, OSError) as exc:
            if not _lost_connection(exc):
                raise
            raise Unavailable("the database is unavailable; retry shortly") from exc

    async def rows_by_id(self, table: Table, ids: list[int]) -> list[dict[str, Any]]:
        """The rows of ``table`` whose ``id`` is in ``ids``, as dicts (batched point reads).

        Runs on the read pool. On PostgreSQL it is one statement on the pooled
        asyncpg connection (``id = ANY($1)``, prepared once per connection and
        bypassing SQLAlchemy's per-statement work); JSON columns come back
        decoded by the codec SQLAlchemy installs on every connection. A read
        that meets a connection the server dropped is retried once: reads are
        idempotent, and the read pool is emptied first, since a restart kills
        every connection in it.
        """
        for attempt in (1, 2):
            try:
                async with self.read_engine.connect() as conn:
                    if self.is_sqlite:
                        stmt = select(table).where(table.c.id.in_(padded(ids)))
                        result = await conn.execute(stmt)
                        keys = list(result.keys())
                        return [dict(zip(keys, row, strict=True)) for row in result.tuples()]
                    driver: Any = (await conn.get_raw_connection()).driver_connection
                    try:
                        records = await driver.fetch(_by_ids_sql(table.name), ids)
                    except _DRIVER_CONNECTION_ERRORS as exc:
                        await conn.invalidate()
                        raise _StaleConnection from exc
                    return [dict(record) for record in records]
            except _StaleConnection as stale:
                await self.read_engine.dispose()
                if attempt == 2:
                    raise Unavailable("the database is unavailable; retry shortly") from stale.__cause__
                log.info("read on a dropped database connection; retrying on a new one")
            except (OperationalError, DBAPIError, OSError) as exc:
                if not _lost_connection(exc):
                    raise
                raise Unavailable("the database is unavailable; retry shortly") from exc
        raise AssertionError("unreachable")

    async def read_first(self, stmt: Executable, params: dict[str, Any] | None = None) -> Row[Any] | None:
        """The first row of one read-only ``stmt`` (with ``params``) on the read pool, or None.

        For hot single-statement reads (an uncached handshake): autocommit, so no
        BEGIN/ROLLBACK round trips, and no pre-ping per checkout; one statement
        sees one consistent snapshot. A read that meets a connection the server
        dropped is retried once on a fresh pool, as in :meth:`rows_by_id`.
        """
        for attempt in (1, 2):
            try:
                async with self.read_engine.connect() as conn:
                    row: Row[Any] | None = (await conn.execute(stmt, params)).first()
                    return row
            except (OperationalError, DBAPIError, OSError) as exc:
                if not _lost_connection(exc):
                    raise
                if attempt == 2 or self.is_sqlite:
                    raise Unavailable("the database is unavailable; retry shortly") from exc
                await self.read_engine.dispose()
                log.info("read on a dropped database connection; retrying on a new one")
        raise AssertionError("unreachable")

    def loader(self, name: str, fetch: Fetch[Any, Any], **options: int) -> BatchLoader[Any, Any]:
        """The process's :class:`BatchLoader` called ``name``, made on first use."""
        loader = self._loaders.get(name)
        if loader is None:
            loader = self._loaders[name] = BatchLoader(fetch, **options)
        return loader

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    async def close(self) -> None:
        for loader in self._loaders.values():
            await loader.close()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
        await self.engine.dispose()


class _StaleConnection(Exception):
    """A pooled read connection turned out to be dead (internal to ``rows_by_id``)."""


#: What asyncpg raises when the connection under a statement is gone or the server is going down.
_DRIVER_CONNECTION_ERRORS = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InterfaceError,
    ConnectionError,
    OSError,
)


@functools.lru_cache(maxsize=64)
def _by_ids_sql(table: str) -> str:
    return f'SELECT * FROM "{table}" WHERE id = ANY($1::bigint[])'


def _lost_connection(exc: Exception) -> bool:
    """True for a lost or refused connection (answered UNAVAILABLE); other errors propagate."""
    return not (
        isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_connection_error(exc)
    )


def _is_connection_error(exc: DBAPIError) -> bool:
    name = type(exc.orig).__name__ if exc.orig is not None else ""
    return isinstance(exc, OperationalError) or any(
        key in name for key in ("Connection", "CannotConnect", "InterfaceError", "TooManyConnections")
    )
