"""The ledger's executor on SQLite: `InlineSQLite`, one sqlite3 connection used directly
on the event loop (db/tx.py has the interface and the group commit it shares with
PostgreSQL's, db/pg_ledger.py).

A SQLite write transaction of a few statements takes tens of microseconds, far less than
handing it to a thread and back (aiosqlite), which under load costs milliseconds of GIL
hand-offs. It never blocks the loop on a lock: BEGIN IMMEDIATE is tried without a busy
timeout and retried with asyncio.sleep while another connection (a CLI, a worker) holds the
write lock.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from minitoolai.db.engine import SQLITE_BUSY_TIMEOUT_MS
from minitoolai.db.tx import GroupCommit, Op, Outcome, Tx, sqlite_params, sqlite_stamp

log = logging.getLogger(__name__)

WAL_FRAME_BYTES = 4096 + 24  # a page and its frame header (SQLite's default page size)
WAL_RESTART_BYTES = 16 * 1024 * 1024  # past this, the checkpoint thread restarts the log
# after a batch in which an op raised, this many batches run with a savepoint per op
CAREFUL_BATCHES = 100


class _SQLiteCursorTx:
    __slots__ = ("_conn",)
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @staticmethod
    def stamp(value: datetime) -> str:
        return sqlite_stamp(value)

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        return self._conn.execute(sql, sqlite_params(params)).rowcount

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        return self._conn.execute(sql, sqlite_params(params)).fetchone()

    async def executemany(self, sql: str, rows: list[dict[str, Any]]) -> int:
        """Run a statement once per row (their times stamped already, see stamp());
        return the rows changed in all. One call into the library for a batch: a batch of
        settlements spends about a fifth less on SQLite than with a call per row
        (bench/RESULTS.md, issue 16's eighth pass)."""
        return self._conn.executemany(sql, rows).rowcount



def _end_stray_transaction(conn: sqlite3.Connection) -> None:
    """Roll back a transaction something left open on the ledger's connection: none may be
    open between two of ours (they take the same lock), and a leftover one would make every
    BEGIN fail and keep the file's write lock from every other process."""
    if conn.in_transaction:
        log.error("the ledger's SQLite connection was left in a transaction; rolled back")
        conn.execute("ROLLBACK")


class InlineSQLite(GroupCommit):
    """Short write transactions on the event loop's own sqlite3 connection."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._careful = 0  # batches left to run with a savepoint per op (see _execute)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False,
                               detect_types=0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=0")  # never block the loop: we retry ourselves
        conn.execute("PRAGMA journal_size_limit=67108864")  # the WAL shrinks back after use
        # a batch of several ops runs each in a SAVEPOINT, whose undo log (the statement
        # journal) is otherwise a temporary file created, written and deleted per batch on
        # the event loop (strace: an open, an unlink, writes and a close per flush)
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    async def run_checkpoints(self, interval: float = 0.5) -> None:
        """Checkpoint the WAL from a thread every `interval` seconds, forever (a lifespan
        task), so it neither grows without bound nor stalls the loop."""
        # from now on checkpoints copy the WAL into the database from a thread, with their
        # fsyncs, instead of on the event loop at the end of some commit
        while self._conn is None:
            await asyncio.sleep(interval)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")

        def checkpoint() -> float:
            """Returns how long a RESTART held the write lock (0: none was needed)."""
            conn = sqlite3.connect(self._path, isolation_level=None, timeout=1)
            try:
                conn.execute("PRAGMA synchronous=NORMAL")
                _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                # Under steady load a PASSIVE checkpoint never lets the log start over: it
                # copies the frames, but the writer appends more before the log is found
                # fully copied, so the WAL grew without bound (1 GB in 30 s at 2,300
                # req/s; its index, mapped into the process, with it) until some commit on
                # the event loop cut it back to journal_size_limit: a stall of up to 0.9 s
                # (190 ms of it freeing the file's pages), measured by the loop monitor.
                # Past WAL_RESTART_BYTES, a RESTART checkpoint (most frames are copied
                # already) waits for the writer's current transaction, copies the rest and
                # makes the next writer start the log from its beginning. Meanwhile the
                # loop's BEGIN IMMEDIATE finds the lock taken and retries with a sleep:
                # the loop itself never waits.
                if frames * WAL_FRAME_BYTES > WAL_RESTART_BYTES:
                    started = time.perf_counter()
                    conn.execute("PRAGMA wal_checkpoint(RESTART)")
                    return time.perf_counter() - started
                return 0.0
            finally:
                conn.close()

        while True:
            await asyncio.sleep(interval)
            try:
                held = await asyncio.to_thread(checkpoint)
            except sqlite3.Error:  # busy or locked: the next round will do it
                continue
            if held > 0.1:  # the ledger's writes waited this long (not the loop)
                log.warning("restarting the SQLite WAL held its write lock %.0f ms", held * 1000)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._lock:  # one transaction at a time on this connection
            if self._conn is None:
                self._conn = self._connect()
            conn = self._conn
            _end_stray_transaction(conn)
            await self._begin(conn)
            try:
                yield _SQLiteCursorTx(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # a COMMIT that failed (busy, disk full) included
                    conn.execute("ROLLBACK")
                raise

    async def _execute(self, ops: list[Op]) -> list[Outcome]:
        """One BEGIN, one COMMIT and one WAL write per page for the whole batch.

        Optimistically without savepoints: SAVEPOINT and RELEASE around each op were a third
        of the statements of a request's reserve and settle (bench/RESULTS.md), and an op
        fails rarely (a key's limit refusing, or the n holds of one image request after
        some applied: a refusal for credit that wrote nothing returns, it does not raise).
        If one does raise, the batch is rolled back and runs again with a savepoint per op,
        so that only the failed op is undone; nothing of the first try committed, so
        nothing is applied twice. Failures come in runs (a client retrying a refused
        key), so the next batches keep their savepoints for a while."""
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        _end_stray_transaction(conn)
        if len(ops) > 1 and not self._careful:
            outcomes = await self._together(conn, ops)
            if outcomes is not None:
                return outcomes
            self._careful = CAREFUL_BATCHES
        elif self._careful:
            self._careful -= 1
        return await self._one_by_one(conn, ops)

    async def _together(self, conn: sqlite3.Connection, ops: list[Op]) -> list[Outcome] | None:
        """The batch in one transaction, or None (rolled back) if an op raised."""
        await self._begin(conn)  # the lock not had in time: the callers get the error
        try:
            tx = _SQLiteCursorTx(conn)
            outcomes: list[Outcome] = [(True, await op(tx)) for op in ops]
            conn.execute("COMMIT")
            return outcomes
        except Exception:  # noqa: BLE001 - any op's failure: the batch runs again
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def _one_by_one(self, conn: sqlite3.Connection, ops: list[Op]) -> list[Outcome]:
        """The batch in one transaction, each op in its own SAVEPOINT (an op alone needs
        none: if it fails, the whole transaction goes)."""
        outcomes: list[Outcome] = []
        try:
            await self._begin(conn)
            tx = _SQLiteCursorTx(conn)
            alone = len(ops) == 1
            for op in ops:
                if not alone:
                    conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, await op(tx)))
                    if not alone:
                        conn.execute("RELEASE op")
                except Exception as exc:  # this op's own failure: undo it alone
                    if alone:
                        if conn.in_transaction:  # SQLite may have rolled back already
                            conn.execute("ROLLBACK")
                    else:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    outcomes.append((False, exc))
            if conn.in_transaction:
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    @staticmethod
    async def _begin(conn: sqlite3.Connection) -> None:
        delay, waited = 0.0005, 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if waited * 1000 > SQLITE_BUSY_TIMEOUT_MS:
                    raise
            await asyncio.sleep(delay)
            waited += delay
            # capped low: the lock is mostly the checkpoint thread's WAL restart (a few ms,
            # every half second under load), and a backoff that doubled to 50 ms overshot
            # its end by up to as much, for every request waiting on the ledger; a failed
            # BEGIN IMMEDIATE costs a few microseconds
            delay = min(delay * 2, 0.004)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
