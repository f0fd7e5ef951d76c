"""The database: one async engine for SQLite or PostgreSQL, with write transactions done right.

SQLite: WAL, a busy timeout, and every write transaction opened with BEGIN IMMEDIATE, so a
write never upgrades a read lock halfway (the source of SQLITE_BUSY under load). Writers in
one process take a single pooled connection in turn, which is cheaper than letting them spin
on the file lock; other processes (CLI, workers) wait on the busy timeout.
PostgreSQL: the same statements; row locks do the rest. The ledger's hot ops on either run
group-committed on a connection of their own (db/tx.py, db/pg_ledger.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from minitoolai.clock import utcnow
from minitoolai.db.faults import as_unavailable
from minitoolai.db.settings import DatabaseSettings
from minitoolai.errors import DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_MS = 10_000


def async_url(url: str) -> str:
    """The async driver URL for a plain sqlite:// or postgresql:// URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.set(drivername="sqlite+aiosqlite"))
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")


def sync_url(url: str) -> str:
    """The sync driver URL (for Alembic) for a plain sqlite:// or postgresql:// URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return str(parsed.set(drivername="sqlite"))
    if parsed.get_backend_name() == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:///... or postgresql://...")


def _sqlite_pragmas(dbapi_connection) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL under WAL survives any process crash (kill -9); only an OS crash or power loss
    # can drop the last commits, and then atomically (never half a settlement).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _install_sqlite_hooks(engine: AsyncEngine, begin_sql: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection, _record):
        # take transaction control away from pysqlite so BEGIN is ours to emit
        dbapi_connection.isolation_level = None
        _sqlite_pragmas(dbapi_connection)

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn):
        conn.exec_driver_sql(begin_sql)


class _Faults:
    """`with db._faults:` turns a driver's "the database is away or full" into
    DatabaseUnavailable (503 with Retry-After); anything else passes unchanged. A class, not
    a generator-based context manager: it wraps every ledger call on the hot path, and holds
    no state, so one instance serves every concurrent call."""

    __slots__ = ("retry_after",)

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, traceback) -> bool:
        if isinstance(exc, Exception) and not isinstance(exc, DatabaseUnavailable):
            fault = as_unavailable(exc, retry_after=self.retry_after, raw_io=True)
            if fault is not None:
                raise fault from exc
        return False


class Database:
    """Connections for reading and for writing. Create once at start, `dispose()` at stop.

    Every query crosses read()/write()/ledger()/run_ledger(): there, a driver's error that
    means the database is away or full becomes DatabaseUnavailable (503 with Retry-After,
    db/faults.py), and a pooled connection is pinged before use, so one the database
    dropped is replaced instead of failing a request."""

    def __init__(self, url: str, *, pool_size: int = 5,
                 settings: DatabaseSettings | None = None) -> None:
        if settings is None:
            settings = DatabaseSettings(pool_size=pool_size, max_overflow=pool_size,
                                        ledger_connections=max(2, pool_size))
        self.url = url
        self.settings = settings
        self._clock_offset = timedelta(0)  # database clock - local clock (sync_clock)
        self.retry_after = settings.retry_after_seconds
        self._faults = _Faults(self.retry_after)
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        pool = {"pool_size": settings.pool_size, "max_overflow": settings.max_overflow,
                "pool_timeout": settings.pool_timeout_seconds}
        if self.is_sqlite:
            path = make_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._reader = create_async_engine(async_url(url), **pool)
            _install_sqlite_hooks(self._reader, "BEGIN")
            self._writer = create_async_engine(async_url(url), pool_size=1, max_overflow=0,
                                               pool_timeout=60)
            _install_sqlite_hooks(self._writer, "BEGIN IMMEDIATE")
            from minitoolai.db.sqlite_ledger import InlineSQLite

            self._inline = InlineSQLite(path) if path and path != ":memory:" else None
            self._pg_ledger = None
        else:
            # pre-ping: one round trip per checkout (the chat hot path checks none out:
            # keys are cached, the ledger has its own connections) so that a connection the
            # database dropped is replaced before a request uses it (SQLite's file never
            # drops one: no ping there)
            engine = create_async_engine(
                async_url(url), **pool, pool_pre_ping=True,
                connect_args={"timeout": settings.connect_timeout_seconds,
                              "command_timeout": settings.statement_timeout_seconds})
            self._reader = self._writer = engine
            self._inline = None
            from minitoolai.db.pg_ledger import PgLedger

            self._pg_ledger = PgLedger(
                make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                settings.ledger_connections, acquire_timeout=settings.pool_timeout_seconds,
                connect_timeout=settings.connect_timeout_seconds,
                statement_timeout=settings.statement_timeout_seconds)

    def now(self) -> datetime:
        """The database's clock (UTC), read on this machine: the local clock corrected by
        the offset `sync_clock` measured. Every time that decides money (a hold's expiry,
        an image job's lease) comes from here, so machines whose clocks drift apart still
        agree on when a hold or a lease has run out. SQLite: the local clock (one machine)."""
        return utcnow() + self._clock_offset

    async def sync_clock(self) -> timedelta:
        """Measure how far the database's clock is from this machine's (PostgreSQL)."""
        if self.is_sqlite:
            return self._clock_offset
        began, local = time.monotonic(), utcnow()
        async with self.read() as conn:
            remote = (await conn.exec_driver_sql("SELECT clock_timestamp()")).scalar_one()
        round_trip = time.monotonic() - began
        self._clock_offset = remote - (local + timedelta(seconds=round_trip / 2))
        return self._clock_offset

    @classmethod
    def from_settings(cls, settings) -> Database:
        """The database of a server or worker process, within its connection budget."""
        return cls(settings.resolved_database_url, settings=settings.database)


    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One short write transaction: commits on success, rolls back on any error."""
        with self._faults:
            async with self._writer.begin() as conn:
                yield conn

    @asynccontextmanager
    async def ledger(self):
        """A short write transaction for the ledger's hot statements (see db/tx.py)."""
        from minitoolai.db.tx import SATx

        with self._faults:
            if self._inline is not None:
                async with self._inline.transaction() as tx:
                    yield tx
            elif self._pg_ledger is not None:
                async with self._pg_ledger.transaction() as tx:
                    yield tx
            else:
                async with self._writer.begin() as conn:
                    yield SATx(conn)

    async def run_ledger(self, op, order: int | None = None):
        """Run `op(tx)` in a short write transaction, group-committed with the other ledger
        ops of the same loop turn (db/tx.py GroupCommit; SQLite: db/sqlite_ledger.py,
        PostgreSQL: db/pg_ledger.py). `order`: the account the op locks (see GroupCommit.run)."""
        from minitoolai.db.tx import SATx

        with self._faults:
            if self._inline is not None:
                return await self._inline.run(op, order)
            if self._pg_ledger is not None:
                return await self._pg_ledger.run(op, order)
            async with self._writer.begin() as conn:
                return await op(SATx(conn))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        with self._faults:
            async with self._reader.connect() as conn:
                yield conn

    async def revisions(self, timeout: float) -> set[str]:
        """The migration revisions the database is at (`GET /health/ready`); raises
        DatabaseUnavailable when it does not answer within `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout), self.read() as conn:
                rows = await conn.exec_driver_sql("SELECT version_num FROM alembic_version")
                return {row[0] for row in rows}
        except TimeoutError as exc:
            raise DatabaseUnavailable(f"the database did not answer within {timeout:g} s",
                                      retry_after=self.retry_after) from exc

    async def run_maintenance(self, clock_interval: float = 60.0) -> None:
        """Background upkeep for as long as the server runs (SQLite: WAL checkpoints;
        PostgreSQL: the clock offset measured again every minute)."""
        if self._inline is not None:
            await self._inline.run_checkpoints()
        while not self.is_sqlite:
            await asyncio.sleep(clock_interval)
            try:
                await self.sync_clock()
            except DatabaseUnavailable:  # the last offset holds until the database is back
                continue

    async def dispose(self) -> None:
        if self._inline is not None:
            self._inline.close()
        if self._pg_ledger is not None:
            await self._pg_ledger.close()
        await self._reader.dispose()
        if self._writer is not self._reader:
            await self._writer.dispose()
