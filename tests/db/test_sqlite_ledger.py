"""The ledger's executor on SQLite (db/sqlite_ledger.py): batches without savepoints until
an op fails, and a transaction left open is rolled back."""

from __future__ import annotations

import asyncio

import pytest

from tests.db.test_tx import add_account


async def test_a_clean_sqlite_batch_takes_no_savepoints_and_a_failed_one_applies_once(db):
    """SQLite runs a batch optimistically without a savepoint per op; when an op raises,
    the batch is rolled back and run again with savepoints: the other ops apply once."""
    if not db.is_sqlite:
        pytest.skip("the inline SQLite executor")
    await add_account(db)
    runs: list[int] = []

    def credit(amount, fail=False):
        async def op(tx):
            runs.append(amount)
            await tx.execute("UPDATE accounts SET balance = balance + :a", {"a": amount})
            if fail:
                raise ValueError("refused after writing")
            return amount
        return op

    async def balance() -> int:
        async with db.read() as conn:
            return (await conn.exec_driver_sql("SELECT balance FROM accounts")).scalar()

    await db.run_ledger(credit(0))  # opens the inline connection
    statements: list[str] = []
    db._inline._conn.set_trace_callback(statements.append)
    assert await asyncio.gather(*(db.run_ledger(credit(a)) for a in (1, 2, 4))) == [1, 2, 4]
    assert not [s for s in statements if "SAVEPOINT" in s]
    assert sorted(runs) == [0, 1, 2, 4] and await balance() == 7

    runs.clear()
    results = await asyncio.gather(db.run_ledger(credit(10)), db.run_ledger(credit(20, True)),
                                   db.run_ledger(credit(40)), return_exceptions=True)
    assert results[0] == 10 and results[2] == 40 and isinstance(results[1], ValueError)
    assert [s for s in statements if "SAVEPOINT" in s]  # the second try
    # the first try stopped at the failure; the second ran all three; each committed once
    assert sorted(runs) == [10, 10, 20, 20, 40]
    assert await balance() == 57
    db._inline._conn.set_trace_callback(None)


async def test_a_transaction_left_open_on_the_sqlite_ledger_is_rolled_back(db):
    """Whatever left the inline connection inside a transaction (a COMMIT that failed),
    the next batch rolls it back instead of failing on BEGIN forever, holding the file's
    write lock from every other process."""
    if not db.is_sqlite:
        pytest.skip("the inline SQLite executor")
    await add_account(db)

    def credit(amount):
        async def op(tx):
            return await tx.execute("UPDATE accounts SET balance = balance + :a", {"a": amount})
        return op

    await db.run_ledger(credit(1))
    db._inline._conn.execute("BEGIN IMMEDIATE")
    db._inline._conn.execute("UPDATE accounts SET balance = balance + 1000")  # never committed
    assert await asyncio.gather(db.run_ledger(credit(2)), db.run_ledger(credit(4))) == [1, 1]
    async with db.read() as conn:
        assert (await conn.exec_driver_sql("SELECT balance FROM accounts")).scalar() == 7
