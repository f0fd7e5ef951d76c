"""The ledger's transaction executors: group commit on SQLite, one op's failure alone."""

from __future__ import annotations

import asyncio

import pytest

from minitoolai.db.engine import Database


async def add_account(db) -> None:
    async with db.write() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO accounts (email, name, balance, held, is_admin, disabled, created_at)"
            " VALUES ('a@example.com', '', 0, 0, false, false, CURRENT_TIMESTAMP)")


async def test_ops_of_one_loop_turn_commit_together_and_fail_alone(db, database_url):
    await add_account(db)

    def credit(amount, fail=False):
        async def op(tx):
            await tx.execute("UPDATE accounts SET balance = balance + :a", {"a": amount})
            if fail:
                raise ValueError("this op fails after writing")
            return amount
        return op

    results = await asyncio.gather(db.run_ledger(credit(1)), db.run_ledger(credit(10, True)),
                                   db.run_ledger(credit(100)), return_exceptions=True)
    assert results[0] == 1 and results[2] == 100
    assert isinstance(results[1], ValueError)
    fresh = Database(database_url, pool_size=1)  # another connection sees the commit
    try:
        async with fresh.read() as conn:
            balance = (await conn.exec_driver_sql("SELECT balance FROM accounts")).scalar()
    finally:
        await fresh.dispose()
    assert balance == 101


async def test_an_op_error_reaches_its_caller(db):
    async def broken(tx):
        await tx.execute("UPDATE no_such_table SET x = 1", {})

    with pytest.raises(Exception, match="no_such_table|does not exist"):
        await db.run_ledger(broken)


async def test_an_op_alone_that_fails_after_writing_leaves_nothing(db, database_url):
    """A batch of one runs without a savepoint: its failure must still undo its writes."""
    await add_account(db)

    async def credit_then_fail(tx):
        await tx.execute("UPDATE accounts SET balance = balance + 5", {})
        raise ValueError("fails after writing")

    async def credit(tx):
        return await tx.execute("UPDATE accounts SET balance = balance + 7", {})

    with pytest.raises(ValueError):
        await db.run_ledger(credit_then_fail)
    assert await db.run_ledger(credit) == 1  # the connection is usable afterwards
    async with db.read() as conn:
        balance = (await conn.exec_driver_sql("SELECT balance FROM accounts")).scalar()
    assert balance == 7


def test_times_are_stored_as_sqlalchemy_stores_them():
    """The inline executor writes datetimes itself: in exactly the text SQLAlchemy's SQLite
    dialect writes and parses, in UTC, whatever the value's zone."""
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects import sqlite

    from minitoolai.db.tx import sqlite_stamp

    render = sqlite.DATETIME().bind_processor(sqlite.dialect())
    for value in (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                  datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
                  datetime.now(UTC)):
        assert sqlite_stamp(value) == render(value.astimezone(UTC).replace(tzinfo=None))
