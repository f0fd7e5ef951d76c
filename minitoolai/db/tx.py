"""A minimal transaction interface for the ledger's hot statements, and its executors.

The ledger's reserve and settle run on every request, so they are written once as plain SQL
with `:name` parameters and run by whichever executor suits the database. `GroupCommit`
runs the ops of one event-loop turn in one transaction; its two kinds:

- `InlineSQLite` (db/sqlite_ledger.py): one sqlite3 connection used directly on the event
  loop.
- `PgLedger` (db/pg_ledger.py): a raw asyncpg connection on PostgreSQL.

and `SATx`: an SQLAlchemy AsyncConnection, for a transaction the caller already holds (an
image job's change of state that must commit with its charge).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import text

from minitoolai.observability import metrics


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
        return sqlite_params(params) if self.conn.dialect.name == "sqlite" else params

    def stamp(self, value: datetime) -> Any:
        return sqlite_stamp(value) if self.conn.dialect.name == "sqlite" else value

    async def execute(self, sql: str, params: dict[str, Any]) -> int:
        return (await self.conn.execute(self._text(sql), self._params(params))).rowcount

    async def fetchone(self, sql: str, params: dict[str, Any]) -> tuple | None:
        return (await self.conn.execute(self._text(sql), self._params(params))).first()


_stamps: dict[datetime, str] = {}  # a transaction reuses a couple of datetimes


def sqlite_stamp(value: datetime) -> str:
    # store datetimes exactly as SQLAlchemy's SQLite dialect does, so either can read them
    text = _stamps.get(value)
    if text is None:
        if len(_stamps) > 64:
            _stamps.clear()
        # isoformat is 3x faster than strftime and writes the same text
        text = _stamps[value] = value.astimezone(UTC).replace(tzinfo=None).isoformat(
            " ", "microseconds")
    return text


def sqlite_params(params: dict[str, Any]) -> dict[str, Any]:
    for value in params.values():
        if isinstance(value, datetime):
            return {k: sqlite_stamp(v) if isinstance(v, datetime) else v
                    for k, v in params.items()}
    return params  # nothing to convert (the hot path stamps its times once, see stamp())


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
