"""Which real driver errors mean "the database is away" (503 with Retry-After) and which
are the query's own (they stay what they are): each error here is produced for real."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from minitoolai.db.engine import Database
from minitoolai.db.faults import as_unavailable, connection_lost
from minitoolai.errors import DatabaseUnavailable
from tests.conftest import _pg_reachable, make_customer
from tests.servers import free_port


async def test_refused_connection_is_unavailable_only_where_it_came_from_a_driver():
    port = free_port()  # nothing listens there
    with pytest.raises(OSError) as refused:
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=2)
    assert as_unavailable(refused.value, raw_io=True).code == "database_unavailable"
    assert as_unavailable(refused.value) is None  # app-wide, a bare OSError is not ours
    assert connection_lost(refused.value)


async def test_the_database_class_answers_503_for_an_unreachable_database():
    db = Database(f"postgresql://postgres@127.0.0.1:{free_port()}/x", pool_size=1)
    try:
        with pytest.raises(DatabaseUnavailable) as read:
            async with db.read() as conn:
                await conn.execute(text("SELECT 1"))
        with pytest.raises(DatabaseUnavailable) as ledger:
            await db.run_ledger(lambda tx: tx.fetchone("SELECT 1", {}))
        with pytest.raises(DatabaseUnavailable):
            async with db.ledger() as tx:
                await tx.fetchone("SELECT 1", {})
    finally:
        await db.dispose()
    for err in (read.value, ledger.value):
        assert err.status_code == 503 and err.headers == {"Retry-After": "2"}


async def test_terminated_backend_is_unavailable_and_lost(database_url):
    """asyncpg says it two ways, depending on when the server's notice arrives: the
    connection "was closed in the middle of operation", or "cannot switch to state"."""
    if not database_url.startswith("postgresql") or _pg_reachable():
        pytest.skip("needs PostgreSQL")
    seen = set()
    for _ in range(8):
        conn = await asyncpg.connect(database_url)
        other = await asyncpg.connect(database_url)
        try:
            await other.execute("SELECT pg_terminate_backend($1)", conn.get_server_pid())
            with pytest.raises(Exception) as killed:
                await conn.fetchval("SELECT 1")
        finally:
            conn.terminate()
            await other.close()
        seen.add(type(killed.value).__name__)
        assert as_unavailable(killed.value).code == "database_unavailable", killed.value
        assert connection_lost(killed.value)
    assert seen


async def test_exhausted_pool_is_busy(database_url):
    engine = create_async_engine(Database(database_url).url.replace(
        "postgresql://", "postgresql+asyncpg://").replace("sqlite://", "sqlite+aiosqlite://"),
        pool_size=1, max_overflow=0, pool_timeout=0.1)
    try:
        async with engine.connect():
            with pytest.raises(sa_exc.TimeoutError) as timed_out:
                async with engine.connect():
                    pass
    finally:
        await engine.dispose()
    assert as_unavailable(timed_out.value).code == "database_busy"


async def test_a_query_error_stays_what_it_is(database_url):
    customer = await make_customer(database_url, 0)
    db = Database(database_url, pool_size=1)
    try:
        with pytest.raises(sa_exc.IntegrityError) as duplicate:
            async with db.write() as conn:
                await conn.execute(text("INSERT INTO accounts (email, name, balance, held,"
                                        " created_at) VALUES (:e, '', 0, 0, CURRENT_TIMESTAMP)"),
                                   {"e": customer.email})
        with pytest.raises(sa_exc.ProgrammingError if "postgresql" in database_url
                           else sa_exc.OperationalError) as syntax:
            async with db.read() as conn:
                await conn.execute(text("SELECT nothing FROM nowhere"))
    finally:
        await db.dispose()
    assert as_unavailable(duplicate.value, raw_io=True) is None
    assert as_unavailable(syntax.value, raw_io=True) is None
    assert not connection_lost(duplicate.value)


def test_sqlite_locked_is_unavailable(tmp_path):
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        with pytest.raises(sqlite3.OperationalError) as locked:
            other.execute("BEGIN IMMEDIATE")
        other.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert as_unavailable(locked.value).code == "database_unavailable"
