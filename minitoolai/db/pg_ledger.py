"""The ledger's hot statements on PostgreSQL: group commit over a raw asyncpg connection.

Every billed request reserves and settles; on PostgreSQL each commit waits for a WAL flush
while the account's row is locked, so committing each op on its own caps one account at a
few hundred ops per second, and SQLAlchemy's layers cost more CPU than the statements. Here
the ops of one event-loop turn share one transaction (and one WAL flush) on a connection of
our own, each statement a prepared asyncpg statement.

PostgreSQL aborts a whole transaction on any error, and a savepoint per op would cost two
more round trips each. So a batch runs without them: if any op raises (a key's spending
limit refusing after its account's hold applied; the n holds of one image request refused
after some applied; a reserve refused for lack of credit writes nothing and returns
instead), the batch rolls back and each of its ops runs again alone, in a transaction of its
own, and gets its own result. Nothing of a failed batch is ever committed, so no op is
applied twice. A batch takes its accounts' row locks in id order (GroupCommit), like every
other transaction on several accounts. An op that is a single statement and alone in its
batch runs without BEGIN and COMMIT (db/tx.py one_statement): the statement commits as it
ends, one round trip instead of three.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from minitoolai.db.faults import connection_lost
from minitoolai.db.tx import GroupCommit, Op, Outcome
from minitoolai.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

# while the database is away every batch retried finds its connection lost: one warning
# per this many seconds, saying how many it stood for
LOST_WARNING_SECONDS = 10.0
_NAME = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # `:name`, not a `::type` cast
# bounded by the statements in the code (the hold keeper's IN lists: at most 500 shapes)
_statements: dict[str, tuple[str, tuple[str, ...]]] = {}


def numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` parameters as asyncpg's `$n`, and the names in order (cached per text)."""
    cached = _statements.get(sql)
    if cached is None:
        names: list[str] = []

        def number(match: re.Match) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        cached = _statements[sql] = (_NAME.sub(number, sql), tuple(names))
    return cached


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag: "UPDATE 1", "DELETE 0", "INSERT 0 1"
    count = status.rpartition(" ")[2]
    return int(count) if count.isdigit() else 0


class _PgTx:
    __slots__ = ("_conn",)
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @staticmethod
    def stamp(value: datetime) -> datetime:
        return value

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        text, names = numbered(sql)
        return _rowcount(await self._conn.execute(text, *[params[n] for n in names]))

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        text, names = numbered(sql)
        row = await self._conn.fetchrow(text, *[params[n] for n in names])
        return None if row is None else tuple(row)


class PgLedger(GroupCommit):
    """Group-committed ledger ops on one asyncpg connection at a time, and short
    transactions of plain SQL (`transaction()`: the image queue's changes of state).

    The database may drop any connection at any moment (a restart, pg_terminate_backend,
    a network cut). The kept flush connection is checked before each batch and thrown away
    on any connection error; a batch whose connection was lost runs once more on a fresh
    one (its committed ops are not run again, see `_execute`). Connecting, waiting for a
    free connection and every statement have time limits, so a database that is away
    turns into an error the app answers 503, never a request that hangs."""

    def __init__(self, dsn: str, pool_size: int, *, acquire_timeout: float = 5.0,
                 connect_timeout: float = 5.0, statement_timeout: float = 30.0) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool_size = max(2, pool_size)
        self._acquire_timeout = acquire_timeout
        self._connect_timeout = connect_timeout
        self._statement_timeout = statement_timeout
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._flusher: asyncpg.Connection | None = None  # kept between flushes
        self._closed = False
        self.batches_undone = 0  # batches rolled back and run again op by op
        self.reconnects = 0  # flush connections replaced after an error
        # an outage is a warning every LOST_WARNING_SECONDS, not one per batch retried
        self._lost_warned = -LOST_WARNING_SECONDS
        self._lost_unsaid = 0

    def _connect_options(self) -> dict[str, Any]:
        return {"timeout": self._connect_timeout, "command_timeout": self._statement_timeout,
                "server_settings": {"application_name": "minitoolai-ledger"}}

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise RuntimeError("the ledger's database connections are closed")
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    # min_size=0: making the pool connects nothing, so it cannot fail while
                    # the database is away; each acquire connects (or reconnects) as needed
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=0, max_size=self._pool_size - 1,
                        **self._connect_options())
        return self._pool

    async def _acquire(self) -> asyncpg.Connection:
        pool = await self._connection_pool()
        try:
            return await pool.acquire(timeout=self._acquire_timeout)
        except TimeoutError as exc:
            if pool.get_idle_size() == 0 and pool.get_size() >= self._pool_size - 1:
                raise DatabaseUnavailable(
                    f"all {self._pool_size - 1} ledger connections are busy; retry shortly",
                    code="database_busy") from exc
            raise  # connecting timed out: the database is away (db/faults.py)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        """One transaction of its own (no group commit): commits on success, rolls back
        on any error. A connection that broke is closed, and the pool replaces it."""
        conn = await self._acquire()
        try:
            async with conn.transaction():
                yield _PgTx(conn)
        except BaseException as exc:
            if connection_lost(exc):
                _terminate(conn)
            raise
        finally:
            await self._release(conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        # a connection the database closed was already handed back by asyncpg (the proxy
        # is detached): releasing it again does nothing
        try:
            await self._pool.release(conn, timeout=self._connect_timeout)
        except Exception:  # noqa: BLE001 - resetting a broken connection: drop it instead
            _terminate(conn)
            log.warning("a ledger connection could not be reset; it was closed")

    async def _flush_connection(self) -> asyncpg.Connection:
        # one connection of its own, outside the pool, kept for the flushes: acquiring from
        # the pool each time would cost a reset round trip per batch (and asyncpg detaches
        # a pooled connection that the database closes, so it cannot be kept from a pool)
        if self._closed:
            raise RuntimeError("the ledger's database connections are closed")
        if self._flusher is not None and self._flusher.is_closed():
            await self._drop_flusher()
        if self._flusher is None:
            self._flusher = await asyncpg.connect(self._dsn, **self._connect_options())
        return self._flusher

    async def _drop_flusher(self) -> None:
        """Throw the kept connection away; the next flush opens another."""
        conn, self._flusher = self._flusher, None
        if conn is not None:
            self.reconnects += 1
            conn.terminate()

    async def _execute(self, ops: list[Op]) -> list[Outcome]:
        """Run the batch; if its connection is lost, once more on a fresh connection.

        Only what did not commit runs again: a batch in one transaction is all or nothing,
        and ops run alone record their outcome as they commit. (A connection lost while
        its COMMIT is in flight leaves that commit unknown; a settle is idempotent, a
        reserve run twice is refused by its hold's primary key and reported unavailable:
        its hold, if the first try did commit, is released by the sweeper.)
        """
        outcomes: list[Outcome | None] = [None] * len(ops)
        for attempt in (1, 2):
            try:
                conn = await self._flush_connection()
                await self._run(conn, ops, outcomes)
                if attempt == 2:
                    return [_unknown_if_duplicate(o) for o in outcomes]
                return outcomes  # type: ignore[return-value]
            except Exception as exc:  # noqa: BLE001 - any failure: drop the connection
                await self._drop_flusher()
                if attempt == 2 or not connection_lost(exc):
                    # the callers of what did not commit get the error (503, db/faults.py)
                    return [(False, exc) if o is None else o for o in outcomes]
                self._warn_lost(exc)
        raise AssertionError("unreachable")

    def _warn_lost(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._lost_warned < LOST_WARNING_SECONDS:
            self._lost_unsaid += 1  # while the database is away, every retry comes here
            log.debug("the ledger's database connection was lost (%s); retrying", exc)
            return
        more = (f" ({self._lost_unsaid} more since the last such warning)"
                if self._lost_unsaid else "")
        log.warning("the ledger's database connection was lost (%s); retrying on a new"
                    " one%s", exc, more)
        self._lost_warned, self._lost_unsaid = now, 0

    async def _run(self, conn: asyncpg.Connection, ops: list[Op],
                   outcomes: list[Outcome | None]) -> None:
        pending = [i for i, outcome in enumerate(outcomes) if outcome is None]
        tx = _PgTx(conn)
        if len(pending) > 1:
            results = await self._together(conn, tx, [ops[i] for i in pending])
            if results is not None:
                for i, result in zip(pending, results, strict=True):
                    outcomes[i] = (True, result)
                return
            self.batches_undone += 1
        for i in pending:
            if getattr(ops[i], "one_statement", False):
                outcomes[i] = await self._autocommit(tx, ops[i])
            else:
                outcomes[i] = await self._alone(conn, tx, ops[i])

    @staticmethod
    async def _together(conn: asyncpg.Connection, tx: _PgTx, ops: list[Op]) -> list | None:
        """The whole batch in one transaction, or None (rolled back) if any op raised."""
        try:
            async with conn.transaction():
                return [await op(tx) for op in ops]
        except Exception as exc:
            if connection_lost(exc):
                raise  # not an op's failure: the batch runs again on a new connection
            return None  # the caller runs each op again alone

    @staticmethod
    async def _alone(conn: asyncpg.Connection, tx: _PgTx, op: Op) -> Outcome:
        try:
            async with conn.transaction():
                return True, await op(tx)
        except Exception as exc:
            if connection_lost(exc):
                raise
            return False, exc  # the op's own failure goes to its caller

    @staticmethod
    async def _autocommit(tx: _PgTx, op: Op) -> Outcome:
        """An op that is one statement (db/tx.py one_statement): the statement is its own
        transaction, so BEGIN and COMMIT would only add two round trips."""
        try:
            return True, await op(tx)
        except Exception as exc:
            if connection_lost(exc):
                raise
            return False, exc

    async def close(self) -> None:
        self._closed = True  # a flush still queued fails instead of opening a new pool
        async with self._lock:  # let a flush in progress finish
            if self._flusher is not None:
                try:
                    await self._flusher.close(timeout=self._connect_timeout)
                except Exception:  # noqa: BLE001 - gone or stalled: just drop it
                    self._flusher.terminate()
                self._flusher = None
            if self._pool is not None:
                await self._pool.close()
                self._pool = None


def _unknown_if_duplicate(outcome: Outcome) -> Outcome:
    """On a retry, a duplicate key means the first try may have committed unseen."""
    ok, value = outcome
    if not ok and isinstance(value, asyncpg.UniqueViolationError):
        unknown = DatabaseUnavailable("the database connection was lost while this request"
                                      " was being recorded; retry it")
        unknown.__cause__ = value
        return False, unknown
    return outcome


def _terminate(conn: asyncpg.Connection) -> None:
    try:
        conn.terminate()
    except asyncpg.InterfaceError:  # already closed and handed back to the pool
        pass
