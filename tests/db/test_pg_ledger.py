"""The PostgreSQL ledger executor's own pieces (its behaviour is tested through the ledger
on a real PostgreSQL in tests/ledger and tests/db/test_tx.py)."""

from __future__ import annotations

from minitoolai.db.pg_ledger import _rowcount, numbered


def test_named_parameters_become_numbered_once_each():
    sql, names = numbered("UPDATE a SET held = held + :amount WHERE id = :id"
                          " AND balance - held >= :amount AND t < :now::timestamptz"
                          " AND k IN (:id0, :id10)")
    assert sql == ("UPDATE a SET held = held + $1 WHERE id = $2 AND balance - held >= $1"
                   " AND t < $3::timestamptz AND k IN ($4, $5)")
    assert names == ("amount", "id", "now", "id0", "id10")
    assert numbered("SELECT 1") == ("SELECT 1", ())


def test_command_tags_give_row_counts():
    assert _rowcount("UPDATE 1") == 1
    assert _rowcount("DELETE 0") == 0
    assert _rowcount("INSERT 0 3") == 3
    assert _rowcount("BEGIN") == 0


async def test_two_servers_batches_never_deadlock(database_url):
    """Two servers' batches each touch two accounts, submitted in opposite orders: a batch
    locks its accounts in id order, so neither waits on the other in a cycle (PostgreSQL
    would break the cycle after a second, rolling one batch back)."""
    import asyncio

    import pytest

    from minitoolai.db.engine import Database
    from minitoolai.ledger.holds import UsageRecord, reserve, settle
    from minitoolai.ledger.verify import verify
    from tests.conftest import make_customer

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: there is no lock cycle to make")
    a = (await make_customer(database_url, 10**12)).account_id
    b = (await make_customer(database_url, 10**12)).account_id
    servers = [Database(database_url, pool_size=2), Database(database_url, pool_size=2)]
    record = UsageRecord(endpoint="test", model="m")

    async def one(db, account, request_id):
        await reserve(db, request_id=request_id, account_id=account, key_id=None, amount=100,
                      kind="chat", ttl_seconds=60)
        assert await settle(db, request_id, 60, record, account_id=account) == 60

    try:
        for n in range(20):
            await asyncio.gather(one(servers[0], a, f"x{n}a"), one(servers[0], b, f"x{n}b"),
                                 one(servers[1], b, f"y{n}b"), one(servers[1], a, f"y{n}a"))
        assert [db._pg_ledger.batches_undone for db in servers] == [0, 0]
        assert await verify(servers[0]) == []
    finally:
        for db in servers:
            await db.dispose()


async def test_an_op_of_one_statement_alone_runs_without_begin_and_commit(database_url):
    """A lone op marked one_statement (a batch of leased settlements) is one round trip:
    the statement is its own transaction. Ops that are not marked, or that share their
    batch, still run between BEGIN and COMMIT."""
    import asyncio

    import pytest

    from minitoolai.db.engine import Database
    from minitoolai.db.tx import one_statement
    from tests.conftest import make_customer

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite's statements are calls into the library: no round trips")
    account = (await make_customer(database_url, 10**9)).account_id
    db = Database(database_url, pool_size=2)
    sent: list[str] = []
    bump = "UPDATE accounts SET name = name || 'x' WHERE id = :id"

    @one_statement
    async def marked(tx):
        return await tx.execute(bump, {"id": account})

    async def plain(tx):
        return await tx.execute(bump, {"id": account})

    try:
        conn = await db._pg_ledger._flush_connection()
        conn.add_query_logger(lambda logged: sent.append(logged.query.split()[0].upper()))
        assert await db.run_ledger(marked, order=account) == 1
        assert sent == ["UPDATE"]
        sent.clear()
        assert await db.run_ledger(plain, order=account) == 1
        assert sent == ["BEGIN;", "UPDATE", "COMMIT;"]
        sent.clear()
        assert await asyncio.gather(db.run_ledger(marked, order=account),
                                    db.run_ledger(plain, order=account)) == [1, 1]
        assert sent == ["BEGIN;", "UPDATE", "UPDATE", "COMMIT;"]
        async with db.read() as c:
            name = (await c.exec_driver_sql(
                f"SELECT name FROM accounts WHERE id = {account}")).scalar_one()
        assert name.endswith("xxxx")
    finally:
        await db.dispose()


async def test_a_lost_connection_is_one_warning_per_interval(monkeypatch, caplog):
    """While the database is away every batch retried finds its connection lost: the log
    says so once per LOST_WARNING_SECONDS, with how many retries it stands for, not once
    a batch (a dozen lines a second in an operator's outage)."""
    import logging

    from minitoolai.db import pg_ledger

    now = [1000.0]
    monkeypatch.setattr(pg_ledger.time, "monotonic", lambda: now[0])
    ledger = pg_ledger.PgLedger("postgresql://127.0.0.1:1/none", pool_size=2)
    caplog.set_level(logging.WARNING, logger=pg_ledger.__name__)
    for _ in range(5):
        ledger._warn_lost(ConnectionResetError("reset by peer"))
        now[0] += 1.0
    assert [r.getMessage() for r in caplog.records] == [
        "the ledger's database connection was lost (reset by peer); retrying on a new one"]
    now[0] += pg_ledger.LOST_WARNING_SECONDS
    ledger._warn_lost(ConnectionResetError("reset by peer"))
    assert caplog.records[-1].getMessage().endswith("(4 more since the last such warning)")
    assert len(caplog.records) == 2
