"""The ledger's hot statements on PostgreSQL: group commit over a raw asyncpg connection.

Every billed request reserves and settles; on PostgreSQL each commit waits for a WAL flush
while the account's row is locked, so committing each op on its own caps one account at a
few hundred ops per second, and SQLAlchemy's layers cost more CPU than the statements. Here
the ops of one event-loop turn share one transaction (and one WAL flush) on a connection of
our own, each statement a prepared asyncpg statement.

PostgreSQL aborts a whole transaction on any error, and a savepoint per op would cost two
more round trips each. So a batch runs without them: if any op raises (a key's spending
limit refusing after its account's hold applied; a reserve refused for lack of credit
writes nothing and returns instead), the batch rolls back and each of its ops runs again
alone, in a transaction of its own, and gets its own result. Nothing of a failed batch is
ever committed, so no op is applied twice. A batch takes its accounts' row locks in id
order (GroupCommit), like every other transaction on several accounts.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from minitoolai.db.tx import GroupCommit, Op, Outcome

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
    transactions of plain SQL (`transaction()`: the image queue's changes of state)."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        super().__init__()
        self._dsn = dsn
        self._pool_size = max(2, pool_size)
        self._pool: asyncpg.Pool | None = None
        self._flusher: asyncpg.Connection | None = None  # kept between flushes
        self._closed = False
        self.batches_undone = 0  # batches rolled back and run again op by op

    async def _connection_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise RuntimeError("the ledger's database connections are closed")
        if self._pool is None:
            # group commit takes one connection at a time; the others serve transaction()
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=self._pool_size,
                server_settings={"application_name": "minitoolai-ledger"})
        return self._pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PgTx]:
        """One transaction of its own (no group commit): commits on success, rolls back
        on any error."""
        pool = await self._connection_pool()
        async with pool.acquire() as conn, conn.transaction():
            yield _PgTx(conn)

    async def _flush_connection(self) -> asyncpg.Connection:
        # one connection kept for the flushes: acquiring from the pool each time would cost
        # a reset round trip per batch
        pool = await self._connection_pool()
        if self._flusher is not None:
            try:
                broken = self._flusher.is_closed()
            except asyncpg.InterfaceError:  # the pool took back a connection that was lost
                broken = True
            if broken:
                conn, self._flusher = self._flusher, None
                with contextlib.suppress(asyncpg.InterfaceError):
                    await pool.release(conn)  # the pool replaces it
        if self._flusher is None:
            self._flusher = await pool.acquire()
        return self._flusher

    async def _execute(self, ops: list[Op]) -> list[Outcome]:
        conn = await self._flush_connection()
        tx = _PgTx(conn)
        if len(ops) > 1:
            outcomes = await self._together(conn, tx, ops)
            if outcomes is not None:
                return outcomes
            self.batches_undone += 1
        return [await self._alone(conn, tx, op) for op in ops]

    @staticmethod
    async def _together(conn: asyncpg.Connection, tx: _PgTx, ops: list[Op]) -> list | None:
        """The whole batch in one transaction, or None (rolled back) if any op raised."""
        try:
            async with conn.transaction():
                results = [await op(tx) for op in ops]
        except Exception:  # noqa: BLE001 - the caller runs each op again alone
            return None
        return [(True, result) for result in results]

    @staticmethod
    async def _alone(conn: asyncpg.Connection, tx: _PgTx, op: Op) -> Outcome:
        try:
            async with conn.transaction():
                return True, await op(tx)
        except Exception as exc:  # noqa: BLE001 - the op's own failure goes to its caller
            return False, exc

    async def close(self) -> None:
        self._closed = True  # a flush still queued fails instead of opening a new pool
        async with self._lock:  # let a flush in progress finish
            if self._pool is not None:
                if self._flusher is not None:
                    await self._pool.release(self._flusher)
                    self._flusher = None
                await self._pool.close()
                self._pool = None
