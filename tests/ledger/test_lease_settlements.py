"""Settling holds served from credit leases (ledger/lease_settlements.py): a server's
settlements of one moment in one batch (on PostgreSQL one statement, each late charge a
transaction of its own; on SQLite one call per step), a lease swept under its settlements,
a request settled twice, and a batch that would overdraw its lease writing nothing. Every
test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from minitoolai.db.engine import Database
from minitoolai.db.tables import credit_leases
from minitoolai.ledger.sweeper import sweep_expired_leases
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer
from tests.ledger.leasing import RECORD, credit, expire, keeper


async def live_and_swept(db: Database, database_url: str):
    """A customer, a live server's keeper with its lease (`mine`), a lease of a dead server
    swept already (`theirs`), and settle(request id, lease, charge) through the live
    server's batch."""
    customer = await make_customer(database_url, 10**9)
    live, dead = keeper(db, 10_000_000, "live"), keeper(db, 10_000_000, "dead")
    mine = await live.leases.take(customer.account_id, customer.key_id, 30_000)
    theirs = await dead.leases.take(customer.account_id, customer.key_id, 20_000)
    await expire(db, theirs.id)
    assert await sweep_expired_leases(db) == 1

    def settle(rid: str, lease, charge: int):
        return live.leases.settlements.settle(
            lease_id=lease.id, request_id=rid, account_id=customer.account_id,
            key_id=customer.key_id, charge=charge, record=RECORD)

    return customer, live, mine, theirs, settle


async def test_settlements_batched_with_a_swept_lease_and_a_repeat(db, database_url):
    """One batch: settlements on a live lease, two whose lease was swept (charged to the
    account directly), and one request settled twice in the same batch (charged once)."""
    customer, live, mine, theirs, settle = await live_and_swept(db, database_url)

    results = await asyncio.gather(
        settle("a", mine, 1_000), settle("b", mine, 2_000), settle("c", mine, 0),
        settle("a", mine, 1_000), settle("x", theirs, 4_000), settle("y", theirs, 5_000))
    assert results == [1_000, 2_000, 0, None, 4_000, 5_000]
    live.leases.settling(mine, 30_000, 3_000)
    live.leases.landed(mine.id, 3_000)
    await live.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 12_000, 0)
    async with db.read() as conn:
        late = (await conn.execute(sa.text("SELECT count(*) FROM ledger_entries WHERE note"
                                           " LIKE 'late charge%'"))).scalar_one()
        usage = (await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar_one()
    assert (late, usage) == (2, 5)
    assert await verify(db) == []


async def test_a_batch_is_one_statement_and_each_late_charge_a_transaction(db, database_url):
    """On PostgreSQL the batch's settlements on live leases are one statement with no
    BEGIN or COMMIT around it (it commits as it ends); those whose lease was swept are then
    settled one by one, each in a transaction of its own, since a late charge is several
    statements that must commit together."""
    if not database_url.startswith("postgresql"):
        pytest.skip("on SQLite a batch is one transaction whatever it holds: no round trips")
    customer, live, mine, theirs, settle = await live_and_swept(db, database_url)
    assert await settle("warm-up", mine, 1) == 1  # asyncpg's first-use queries
    sent: list[str] = []
    conn = await db._pg_ledger._flush_connection()
    conn.add_query_logger(lambda logged: sent.append(logged.query.split()[0].upper()))
    assert await asyncio.gather(settle("a", mine, 1_000), settle("x", theirs, 4_000),
                                settle("b", mine, 2_000), settle("x", theirs, 4_000),
                                settle("y", theirs, 5_000)) == [1_000, 4_000, 2_000, None,
                                                                5_000]
    late = ["BEGIN;", "WITH", "SELECT", "UPDATE", "UPDATE", "INSERT", "COMMIT;"]
    assert sent == ["WITH", *late, "BEGIN;", "WITH", "COMMIT;", *late], sent
    live.leases.settling(mine, 30_000, 3_001)
    live.leases.landed(mine.id, 3_001)
    await live.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 12_001, 0)
    assert await verify(db) == []


def sqlite_statements(db: Database) -> list[str]:
    """From now on, each statement the ledger's SQLite connection runs, by its first two
    words (a statement run by executemany is traced once per row)."""
    sent: list[str] = []
    db._inline._conn.set_trace_callback(lambda sql: sent.append(" ".join(sql.split()[:2])))
    return sent


async def test_a_sqlite_batch_is_one_call_per_step(db, database_url):
    """On SQLite the settlements of a batch that all apply go in together, inside a
    savepoint: the usage rows (one executemany), one UPDATE per lease for its share, the
    ledger entries of the non-zero charges (one executemany); the charges exact."""
    if database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's batch is one statement (the test above)")
    customer, live, mine, _, settle = await live_and_swept(db, database_url)
    keyless = await live.leases.take(customer.account_id, None, 30_000)
    assert await settle("warm-up", mine, 1) == 1
    sent = sqlite_statements(db)
    keyless_settle = live.leases.settlements.settle(
        lease_id=keyless.id, request_id="b", account_id=customer.account_id, key_id=None,
        charge=500, record=RECORD)
    assert await asyncio.gather(settle("a", mine, 1_000), keyless_settle,
                                settle("c", mine, 2_000), settle("d", mine, 0)) \
        == [1_000, 500, 2_000, 0]
    assert sent == ["BEGIN IMMEDIATE", "SAVEPOINT settle_many", *["INSERT INTO"] * 4,
                    "UPDATE credit_leases", "UPDATE credit_leases", *["INSERT INTO"] * 3,
                    "RELEASE settle_many", "COMMIT"], sent
    async with db.read() as conn:
        charged = dict((await conn.execute(sa.select(credit_leases.c.id,
                                                     credit_leases.c.charged))).all())
        entries = (await conn.execute(sa.text(
            "SELECT count(*), sum(amount) FROM ledger_entries WHERE kind = 'charge'"))).one()
    assert (charged[mine.id], charged[keyless.id]) == (3_001, 500)
    assert tuple(entries) == (4, -3_501)  # the zero charge has its usage row, no entry
    live.leases.settling(mine, 30_000, 3_001)
    live.leases.landed(mine.id, 3_001)
    live.leases.settling(keyless, 30_000, 500)
    live.leases.landed(keyless.id, 500)
    await live.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 3_501, 0)
    assert await verify(db) == []


async def test_a_sqlite_batch_with_one_settled_before_goes_one_by_one(db, database_url):
    """On SQLite, a batch holding a request settled in an earlier batch (a journal's
    replay) is rolled back to its savepoint and settled one by one: the repeat charged
    nothing, the others exactly once."""
    if database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL's batch is one statement")
    customer, live, mine, _, settle = await live_and_swept(db, database_url)
    assert await settle("a", mine, 1_000) == 1_000
    sent = sqlite_statements(db)
    assert await asyncio.gather(settle("b", mine, 2_000), settle("a", mine, 1_000)) \
        == [2_000, None]
    assert "ROLLBACK TO" in sent, sent
    live.leases.settling(mine, 30_000, 3_000)
    live.leases.landed(mine.id, 3_000)
    await live.close_leases()
    async with db.read() as conn:
        usage = (await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar_one()
    assert usage == 2
    assert await credit(db, customer.account_id) == (10**9 - 3_000, 0)
    assert await verify(db) == []


async def test_the_database_refuses_a_lease_charged_past_its_amount(db, database_url):
    """The CHECK constraint behind the one-statement settlement batch (migration
    leases_0002): no statement can leave a lease overdrawn."""
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10_000_000)
    lease = await k.leases.take(customer.account_id, customer.key_id, 30_000)
    with pytest.raises(sa.exc.IntegrityError, match="charged_within_amount"):
        async with db.write() as conn:
            await conn.execute(credit_leases.update().where(credit_leases.c.id == lease.id)
                               .values(charged=credit_leases.c.amount + 1))
    async with db.write() as conn:  # up to the amount is fine
        await conn.execute(credit_leases.update().where(credit_leases.c.id == lease.id)
                           .values(charged=credit_leases.c.amount))


async def test_a_batch_of_settlements_that_would_overdraw_its_lease_writes_nothing(
        db, database_url):
    """More charged than the lease holds (a bug, never a customer's doing): every
    settlement of the batch fails (their callers journal and retry them), and none of them
    is written, not even in part: no usage row, no ledger entry, the lease untouched."""
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10_000_000)
    lease = await k.leases.take(customer.account_id, customer.key_id, 30_000)
    async with db.read() as conn:
        amount = (await conn.execute(sa.select(credit_leases.c.amount).where(
            credit_leases.c.id == lease.id))).scalar_one()
    half = amount // 2 + 1  # two of them do not fit

    def settle(rid: str, charge: int):
        return k.leases.settlements.settle(
            lease_id=lease.id, request_id=rid, account_id=customer.account_id,
            key_id=customer.key_id, charge=charge, record=RECORD)

    results = await asyncio.gather(settle("a", half), settle("b", half),
                                   return_exceptions=True)
    # the error says what happened (SQLite: the step's check; PostgreSQL: the statement's)
    assert all(isinstance(r, Exception) and ("does not fit its credit lease" in str(r)
               or "would overdraw 1 credit lease" in str(r)) for r in results), results
    async with db.read() as conn:
        usage = (await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar_one()
        entries = (await conn.execute(sa.text(
            "SELECT count(*) FROM ledger_entries WHERE kind = 'charge'"))).scalar_one()
        charged = (await conn.execute(sa.select(credit_leases.c.charged).where(
            credit_leases.c.id == lease.id))).scalar_one()
    assert (usage, entries, charged) == (0, 0, 0)
