"""A minimal transaction interface for the ledger's hot statements, and its executors.

The ledger's reserve and settle run on every request, so they are written once as plain SQL
with `:name` parameters and run by whichever executor suits the database. `GroupCommit`
runs the ops of one event-loop turn in one transaction; its two kinds:

- `InlineSQLite`: one sqlite3 connection used directly on the event loop. A SQLite write
  transaction of a few statements takes tens of microseconds, far less than handing it to a
  thread and back (aiosqlite), which under load costs milliseconds of GIL hand-offs. It never
  blocks the loop on a lock: BEGIN IMMEDIATE is tried without a busy timeout and retried
  with asyncio.sleep while another connection (a CLI, a worker) holds the write lock.
- `PgLedger` (db/pg_ledger.py): a raw asyncpg connection on PostgreSQL.

and `SATx`: an SQLAlchemy AsyncConnection, for a transaction the caller already holds (an
image job's change of state that must commit with its charge).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text

from minitoolai.db.engine import SQLITE_BUSY_TIMEOUT_MS
from minitoolai.observability import metrics

log = logging.getLogger(__name__)


class Tx(Protocol):
    dialect: str  # "sqlite" or "postgresql": the ledger has one statement per dialect where
    # PostgreSQL does in one round trip what SQLite does in several cheap calls

    def stamp(self, value: datetime) -> Any:
        """`value` as this database stores it; a statement run many times per transaction
        passes its times through here once instead of having each execute convert them."""

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        """Run a statement; return the number of rows it changed."""

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        """Run a statement (a SELECT, or a change with RETURNING); return its first row."""


class SATx:
    """Tx over an SQLAlchemy AsyncConnection inside a transaction."""

    __slots__ = ("conn",)
    _texts: dict[str, Any] = {}

    def __init__(self, conn) -> None:
        self.conn = conn

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    @classmethod
    def _text(cls, sql: str):
        clause = cls._texts.get(sql)
        if clause is None:
            clause = cls._texts[sql] = text(sql)
        return clause

    def _params(self, params: dict[str, Any]) -> dict[str, Any]:
        # on SQLite, datetimes are written in the one format every reader expects
        return _sqlite_params(params) if self.conn.dialect.name == "sqlite" else params

    def stamp(self, value: datetime) -> Any:
        return _stamp(value) if self.conn.dialect.name == "sqlite" else value

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        return (await self.conn.execute(self._text(sql), self._params(params))).rowcount

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        return (await self.conn.execute(self._text(sql), self._params(params))).first()


_stamps: dict[datetime, str] = {}  # a transaction reuses a couple of datetimes


def _stamp(value: datetime) -> str:
    # store datetimes exactly as SQLAlchemy's SQLite dialect does, so either can read them
    text = _stamps.get(value)
    if text is None:
        if len(_stamps) > 64:
            _stamps.clear()
        # isoformat is 3x faster than strftime and writes the same text
        text = _stamps[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat(
            " ", "microseconds")
    return text


def _sqlite_params(params: dict[str, Any]) -> dict[str, Any]:
    for value in params.values():
        if isinstance(value, datetime):
            return {k: _stamp(v) if isinstance(v, datetime) else v for k, v in params.items()}
    return params  # nothing to convert (the hot path stamps its times once, see stamp())


class _SQLiteCursorTx:
    __slots__ = ("_conn",)
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @staticmethod
    def stamp(value: datetime) -> str:
        return _stamp(value)

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        return self._conn.execute(sql, _sqlite_params(params)).rowcount

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        return self._conn.execute(sql, _sqlite_params(params)).fetchone()

    async def executemany(self, sql: str, rows: list[dict[str, Any]]) -> int:
        """Run a statement once per row (their times stamped already, see stamp());
        return the rows changed in all. One call into the library for a batch: a batch of
        settlements spends about a fifth less on SQLite than with a call per row
        (bench/RESULTS.md, issue 16's eighth pass)."""
        return self._conn.executemany(sql, rows).rowcount


WAL_FRAME_BYTES = 4096 + 24  # a page and its frame header (SQLite's default page size)
WAL_RESTART_BYTES = 16 * 1024 * 1024  # past this, the checkpoint thread restarts the log
# after a batch in which an op raised, this many batches run with a savepoint per op
CAREFUL_BATCHES = 100

Op = Callable[[Tx], Awaitable[Any]]
Outcome = tuple[bool, Any]  # (True, result) or (False, the op's exception)


def one_statement(op: Op) -> Op:
    """Mark `op` as a single statement, atomic on its own: when it is alone in its batch,
    PostgreSQL runs it without BEGIN and COMMIT around it (db/pg_ledger.py), one round trip
    instead of three. On PostgreSQL such an op must issue exactly one statement whatever
    happens (no check after it that could want to undo it), since that statement commits
    as it ends; SQLite ignores the mark (a batch there is one transaction whatever it holds,
    and a statement no round trip)."""
    op.one_statement = True  # type: ignore[attr-defined]
    return op


def fail_waiters(futures, exc: BaseException) -> None:
    """A batched transaction failed: every caller still waiting gets the error (a shutdown's
    CancelledError as a plain error: the waiter was not the one cancelled)."""
    error = exc if isinstance(exc, Exception) else RuntimeError("ledger transaction aborted")
    for future in futures:
        if not future.done():
            future.set_exception(error)


class GroupCommit:
    """Run ledger ops submitted in the same turn of the event loop in one transaction.

    One flush at a time: while a batch commits, the next one gathers, so under load a
    single commit (and on PostgreSQL a single WAL flush) serves many requests. Results are
    handed out only after the commit. Subclasses say how a batch runs (`_execute`).
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._batch: list[tuple[float, Op, asyncio.Future]] = []

    async def run(self, op: Op, order: int | None = None) -> Any:
        """Run `op` in a write transaction shared with the other ops of this loop turn;
        an op that raises gets its exception and commits nothing, the others commit.

        `order` is the account the op locks: a batch runs its ops by account, as every
        other transaction that touches several accounts does, so that two batches (two
        server processes on one PostgreSQL) never wait on each other's rows in a cycle.
        Ops without one (hold renewals) run last."""
        future = asyncio.get_running_loop().create_future()
        self._batch.append((math.inf if order is None else order, op, future))
        if len(self._batch) == 1:
            asyncio.get_running_loop().create_task(self._flush())
        return await future

    async def _execute(self, ops: list[Op]) -> list[Outcome]:
        raise NotImplementedError

    async def _flush(self) -> None:
        async with self._lock:
            batch, self._batch = self._batch, []
            batch.sort(key=lambda entry: entry[0])  # stable: same account, same order
            metrics.LEDGER_BATCH.observe(len(batch))
            started = time.perf_counter()
            try:
                outcomes = await self._execute([op for _, op, _ in batch])
                metrics.LEDGER_FLUSH.observe(time.perf_counter() - started)
            except BaseException as exc:
                # the transaction itself failed or was interrupted (shutdown): the callers
                # get the error. An op that did commit (PostgreSQL's reruns commit one by
                # one) is safe to report failed: a settle run again finds no hold, and a
                # reserve's hold nobody uses is released by the sweeper.
                fail_waiters([future for _, _, future in batch], exc)
                if not isinstance(exc, Exception):
                    raise
                return
        for (_, _, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled: the op is committed regardless
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


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
        fails rarely (a key's limit refusing: a refusal for credit returns, it does not
        raise). If one does raise, the batch is rolled back and runs again with a savepoint
        per op, so that only the failed op is undone; nothing of the first try committed,
        so nothing is applied twice. Failures come in runs (a client retrying a refused
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
