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
