"""Credit leases (ledger/leases.py): exact charges, no overspend across processes, key limits,
a dead process's lease returned, and `ledger verify` sound at every step.

Every test runs on SQLite and on PostgreSQL (the outage one on PostgreSQL only: its fault is
a TCP proxy in front of the server)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa

from minitoolai.accounts.store import get_account, update_key
from minitoolai.db.engine import Database
from minitoolai.db.tables import credit_leases
from minitoolai.errors import InsufficientCredit, PermissionDenied
from minitoolai.ledger.holds import UsageRecord, reserve
from minitoolai.ledger.journal import SettlementJournal, read_pending
from minitoolai.ledger.keeper import HoldKeeper
from minitoolai.ledger.lease_settlements import settle_leased
from minitoolai.ledger.leases import LeaseBook
from minitoolai.ledger.settings import LeaseSettings
from minitoolai.ledger.sweeper import sweep_expired_leases
from minitoolai.ledger.verify import verify
from minitoolai.runtime import Runtime
from tests.conftest import make_customer
from tests.fakes.outage import DatabaseOutage

RECORD = UsageRecord(endpoint="chat", model="gpt-4o-mini", prompt_tokens=10,
                     completion_tokens=5)


@pytest.fixture
def pg_only(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the outage is a TCP proxy in front of PostgreSQL")


def keeper(db: Database, size_nano: int, owner: str = "test", *,
           leased: bool = True) -> HoldKeeper:
    """A server process's keeper with its lease book, as Runtime.build makes it; without
    one (`leased=False`, `leases.size` 0) every hold is a row."""
    settings = LeaseSettings(size=f"{size_nano / 10**9:.9f}")
    return HoldKeeper(db, ttl_seconds=60,
                      leases=LeaseBook(db, settings, owner=owner) if leased else None)


# the guarantees that hold with leases and without: those tests run both ways
both_ways = pytest.mark.parametrize("leased", [True, False], ids=["leases", "hold-rows"])


async def expire(db: Database, lease_id: str | None = None) -> None:
    """Age leases past their expiry (a process that stopped renewing them)."""
    query = credit_leases.update().values(expires_at=db.now() - timedelta(hours=1))
    if lease_id is not None:
        query = query.where(credit_leases.c.id == lease_id)
    async with db.write() as conn:
        await conn.execute(query)


async def tick(k: HoldKeeper) -> None:
    if k.leases is not None:
        await k.leases.tick()


def room(k: HoldKeeper) -> int:
    return sum(lease.room for lease in k.leases.leases) if k.leases is not None else 0


async def hold(k: HoldKeeper, rid: str, customer, amount: int, key: bool = True):
    return await k.reserve(request_id=rid, account_id=customer.account_id,
                           key_id=customer.key_id if key else None, amount=amount,
                           kind="chat")


async def credit(db: Database, account_id: int) -> tuple[int, int]:
    account = await get_account(db, account_id)
    return account.balance, account.held


async def leases_in_db(db: Database) -> int:
    async with db.read() as conn:
        return (await conn.execute(sa.text("SELECT count(*) FROM credit_leases"))).scalar_one()


async def test_leased_holds_charge_exactly(db, database_url):
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10_000_000)
    for i, amount in enumerate((600_000, 50_000, 5_000)):
        await hold(k, f"r{i}", customer, amount)
    # one grant of a lease's worth from the account's row, the holds served from it
    assert k.leases.grants == 1
    assert await credit(db, customer.account_id) == (10**9, 10_000_000)
    assert await verify(db) == []
    assert await k.settle_or_journal("r0", 4_500, RECORD, account_id=customer.account_id) \
        == 4_500
    assert await k.settle_or_journal("r1", 99_999, RECORD, account_id=customer.account_id) \
        == 50_000  # never more than the hold
    # charged on the lease: in the ledger and usage now, folded into the account's row at
    # the tick; the customer sees the charges at once (accounts.store.account_columns)
    assert await verify(db) == []
    assert await credit(db, customer.account_id) == (10**9 - 54_500, 10_000_000 - 54_500)
    async with db.read() as conn:
        raw = (await conn.execute(sa.text("SELECT balance, held FROM accounts WHERE id = :a"),
                                  {"a": customer.account_id})).one()
    assert tuple(raw) == (10**9, 10_000_000)
    await k.leases.tick()
    assert await credit(db, customer.account_id) == (10**9 - 54_500, 10_000_000 - 54_500)
    assert await verify(db) == []
    assert await k.settle_or_journal("r2", 0, RECORD, account_id=customer.account_id) == 0
    assert await leases_in_db(db) == 1
    assert await k.leases.tick() == 1  # no hold since the last tick: given back
    assert await credit(db, customer.account_id) == (10**9 - 54_500, 0)
    assert await leases_in_db(db) == 0
    async with db.read() as conn:
        spent = (await conn.execute(sa.text("SELECT spent, held FROM api_keys WHERE id = :k"),
                                    {"k": customer.key_id})).one()
        usage = (await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar_one()
    assert tuple(spent) == (54_500, 0) and usage == 3
    assert await verify(db) == []


async def test_settling_twice_charges_once(db, database_url):
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10_000_000)
    lease = await k.leases.take(customer.account_id, customer.key_id, 10_000)
    args = {"lease_id": lease.id, "request_id": "twice", "account_id": customer.account_id,
            "key_id": customer.key_id, "charge": 7_000, "record": RECORD}
    assert await settle_leased(db, **args) == 7_000
    assert await settle_leased(db, **args) is None  # a journal replayed after the fact
    k.leases.settling(lease, 10_000, 7_000)
    await k.close_leases()  # a charge still on its way keeps its part of the lease
    assert await credit(db, customer.account_id) == (10**9 - 7_000, 7_000)
    k.leases.landed(lease.id, 7_000)
    await k.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 7_000, 0)
    assert await verify(db) == []


@both_ways
async def test_small_account_spends_its_whole_balance(db, database_url, leased):
    """The lease shrinks to what is there; a hold bigger than a lease is still served."""
    customer = await make_customer(database_url, 10_000)
    k = keeper(db, 10**9, leased=leased)  # a lease of $1 on an account of $0.00001
    await hold(k, "a", customer, 3_000)
    # a lease takes half of what is left (other processes get some), at least the hold
    assert await credit(db, customer.account_id) == (10_000, 5_000 if leased else 3_000)
    await hold(k, "b", customer, 7_000)  # bigger than the lease's room: topped up
    assert await credit(db, customer.account_id) == (10_000, 10_000)
    with pytest.raises(InsufficientCredit) as refused:
        await hold(k, "c", customer, 1)
    assert "available balance $0" in refused.value.message
    await k.settle_or_journal("a", 3_000, RECORD, account_id=customer.account_id)
    await k.settle_or_journal("b", 7_000, RECORD, account_id=customer.account_id)
    await k.close_leases()
    assert await credit(db, customer.account_id) == (0, 0)
    assert await verify(db) == []


@both_ways
async def test_two_processes_never_overspend(db, database_url, leased):
    """Two lease books (two server processes) on one small account: the sum of their
    leases and holds never passes the balance, and once one gives its lease back the
    other can use all of it."""
    customer = await make_customer(database_url, 100_000)
    one, two = (keeper(db, 30_000, "one", leased=leased),
                keeper(db, 30_000, "two", leased=leased))
    taken = {"one": [], "two": []}
    for i in range(40):
        for name, k in (("one", one), ("two", two)):
            try:
                await hold(k, f"{name}-{i}", customer, 4_000)
                taken[name].append(f"{name}-{i}")
            except InsufficientCredit:
                pass
            balance, held = await credit(db, customer.account_id)
            assert held <= balance
    assert taken["one"] and taken["two"]  # both got some
    assert 4_000 * (len(taken["one"]) + len(taken["two"])) <= 100_000
    assert await verify(db) == []
    # `one` settles everything at half its hold and gives its lease back
    for rid in taken["one"]:
        await one.settle_or_journal(rid, 2_000, RECORD, account_id=customer.account_id)
    await one.close_leases()
    for rid in taken["two"]:
        await two.settle_or_journal(rid, 4_000, RECORD, account_id=customer.account_id)
    await tick(two)
    balance, held = await credit(db, customer.account_id)
    left = balance - held + room(two)
    await hold(two, "the-rest", customer, left)  # every last nanodollar is usable
    await two.settle_or_journal("the-rest", left, RECORD, account_id=customer.account_id)
    await two.close_leases()
    assert await credit(db, customer.account_id) == (0, 0)
    assert await verify(db) == []


@both_ways
async def test_key_spend_limit_stays_exact(db, database_url, leased):
    customer = await make_customer(database_url, 10**9, spend_limit=5_000)
    k = keeper(db, 10**9, leased=leased)
    await hold(k, "k1", customer, 2_000)
    await hold(k, "k2", customer, 2_000)
    with pytest.raises(InsufficientCredit) as refused:
        await hold(k, "k3", customer, 2_000)
    assert refused.value.code == "key_spend_limit"
    await hold(k, "k4", customer, 1_000)  # exactly up to the limit
    # the key's own limit bounds its lease, whatever the account holds
    async with db.read() as conn:
        held = (await conn.execute(sa.text("SELECT held FROM api_keys WHERE id = :k"),
                                   {"k": customer.key_id})).scalar_one()
    assert held == 5_000
    for rid in ("k1", "k2", "k4"):
        await k.settle_or_journal(rid, 1_000, RECORD, account_id=customer.account_id)
    await k.close_leases()
    # the settled part is spent; what is left of the limit can be held again
    await hold(k, "k5", customer, 2_000)
    with pytest.raises(InsufficientCredit):
        await hold(k, "k6", customer, 1)
    await k.settle_or_journal("k5", 2_000, RECORD, account_id=customer.account_id)
    await k.close_leases()
    async with db.read() as conn:
        spent = (await conn.execute(sa.text("SELECT spent, held FROM api_keys WHERE id = :k"),
                                    {"k": customer.key_id})).one()
    assert tuple(spent) == (5_000, 0)
    assert await verify(db) == []


async def test_a_restricted_key_takes_hold_rows_and_its_limits_hold(db, database_url):
    """A key with a monthly limit or a model allowlist is not leased: each of its holds is a
    hold row whose own statement checks them (ledger/holds.py KEY_ALLOWS), so leases never
    let a request past them; an unrestricted key's leased charges still count in its
    month (the fold), so a monthly limit set later starts from the truth."""
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10**8)
    await hold(k, "u1", customer, 3_000)  # unrestricted: from a lease
    await k.settle_or_journal("u1", 3_000, RECORD, account_id=customer.account_id)
    await k.close_leases()
    async with db.read() as conn:
        month_spent = (await conn.execute(sa.text(
            "SELECT month_spent FROM api_keys WHERE id = :k"), {"k": customer.key_id})
        ).scalar_one()
    assert month_spent == 3_000
    await update_key(db, customer.key_id, customer.account_id, month_limit=5_000,
                     models=["gpt-4o-mini"])
    await k.reserve(request_id="r1", account_id=customer.account_id,
                    key_id=customer.key_id, amount=2_000, kind="chat", model="gpt-4o-mini")
    with pytest.raises(InsufficientCredit) as refused:
        await k.reserve(request_id="r2", account_id=customer.account_id,
                        key_id=customer.key_id, amount=1, kind="chat", model="gpt-4o-mini")
    assert refused.value.code == "key_monthly_limit"
    with pytest.raises(PermissionDenied):
        await k.reserve(request_id="r3", account_id=customer.account_id,
                        key_id=customer.key_id, amount=1, kind="chat", model="gpt-4o")
    async with db.read() as conn:
        rows = (await conn.execute(sa.text("SELECT id FROM holds"))).scalars().all()
    assert rows == ["r1"]  # a hold row, not a lease
    await k.settle_or_journal("r1", 2_000, RECORD, account_id=customer.account_id)
    await k.close_leases()
    assert await verify(db) == []


async def test_dead_process_lease_is_returned_by_the_sweeper(db, database_url):
    customer = await make_customer(database_url, 10**9)
    dead = keeper(db, 10_000_000, "dead")
    await hold(dead, "served", customer, 20_000)
    await hold(dead, "in-flight", customer, 30_000)
    await dead.settle_or_journal("served", 15_000, RECORD, account_id=customer.account_id)
    # the process dies (no tick, no close); its lease expires by the database's clock
    assert await sweep_expired_leases(db) == 0  # not yet expired
    await expire(db)
    assert await sweep_expired_leases(db) == 1
    assert await credit(db, customer.account_id) == (10**9 - 15_000, 0)
    assert await verify(db) == []
    # the in-flight request's settlement comes late (a journal replayed): charged anyway,
    # to the account directly, once
    entry_charge = await settle_leased(
        db, lease_id=dead.leases.leases[0].id, request_id="in-flight",
        account_id=customer.account_id, key_id=customer.key_id, charge=25_000, record=RECORD)
    assert entry_charge == 25_000
    assert await credit(db, customer.account_id) == (10**9 - 40_000, 0)
    async with db.read() as conn:
        note = (await conn.execute(sa.text("SELECT note FROM ledger_entries"
                                           " WHERE request_id = 'in-flight'"))).scalar_one()
    assert note.startswith("late charge")
    assert await verify(db) == []
    # a process that was only slow finds its lease gone and takes a new one
    assert await dead.leases.tick() == 1
    await hold(dead, "after", customer, 1_000)
    await dead.settle_or_journal("after", 1_000, RECORD, account_id=customer.account_id)
    await dead.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 41_000, 0)
    assert await verify(db) == []


@both_ways
async def test_many_concurrent_holds_share_one_grant(db, database_url, leased):
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 100_000_000, leased=leased)
    await asyncio.gather(*(hold(k, f"c{i}", customer, 1_000_000) for i in range(50)))
    assert k.leases is None or k.leases.grants == 1
    await asyncio.gather(*(k.settle_or_journal(f"c{i}", 1_000 + i, RECORD,
                                               account_id=customer.account_id)
                           for i in range(50)))
    await k.close_leases()
    charged = sum(1_000 + i for i in range(50))
    assert await credit(db, customer.account_id) == (10**9 - charged, 0)
    assert await verify(db) == []


@both_ways
async def test_plain_holds_and_leases_side_by_side(db, database_url, leased):
    """An image job's hold row (settled by another process) beside chat holds."""
    customer = await make_customer(database_url, 10**9)
    k = keeper(db, 10_000_000, leased=leased)
    await hold(k, "chat", customer, 5_000)
    await reserve(db, request_id="image", account_id=customer.account_id,
                  key_id=customer.key_id, amount=7_000, kind="image", ttl_seconds=60)
    assert await credit(db, customer.account_id) == (
        10**9, 7_000 + (10_000_000 if k.leases is not None else 5_000))
    assert await verify(db) == []
    await k.settle_or_journal("chat", 5_000, RECORD, account_id=customer.account_id)
    assert await k.settle_or_journal("image", 7_000, RECORD,
                                     account_id=customer.account_id) == 7_000
    await k.close_leases()
    assert await credit(db, customer.account_id) == (10**9 - 12_000, 0)
    assert await verify(db) == []


@pytest.mark.parametrize("size", ["5", "0"])
async def test_leases_are_on_when_sized_on_either_database(make_settings, size):
    runtime = Runtime.build(make_settings(leases={"size": size}))
    try:
        assert (runtime.holds.leases is not None) == (size != "0")
    finally:
        await runtime.db.dispose()


def test_lease_size_must_be_money(make_settings):
    with pytest.raises(Exception, match="leases"):
        make_settings(leases={"size": "lots"})


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


async def test_refused_leased_settlement_is_journaled_then_charged_once(database_url,
                                                                      tmp_path, pg_only):
    """The database goes away between the hold and the settlement: the charge is journaled
    (fsync'd), the lease keeps its part, and the retry charges it once."""
    customer = await make_customer(database_url, 10**9)
    direct = Database(database_url, pool_size=2)
    with DatabaseOutage(database_url) as outage:
        db = Database(outage.url, pool_size=2)
        k = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path),
                       leases=LeaseBook(db, LeaseSettings(size="0.01"), owner="outage"))
        try:
            await hold(k, "ok", customer, 10_000)
            await hold(k, "refused", customer, 10_000)
            assert await k.settle_or_journal("ok", 600, RECORD,
                                             account_id=customer.account_id) == 600
            outage.begin()
            assert await k.settle_or_journal("refused", 700, RECORD,
                                             account_id=customer.account_id) is None
            [pending] = read_pending(k.journal.path)
            assert (pending.request_id, pending.cost, pending.lease_id) == (
                "refused", 700, k.leases.leases[0].id)
            problems = await verify(direct, tmp_path)
            assert len(problems) == 1 and "not yet in the database" in problems[0]
            outage.end()
            assert await k.retry_pending() == 0
            k.pending["refused"] = pending  # replayed again (a lost `done` line)
            assert await k.retry_pending() == 0
            await k.close_leases()
        finally:
            k.close_journal()
            await db.dispose()
    try:
        assert await credit(direct, customer.account_id) == (10**9 - 1_300, 0)
        assert await verify(direct, tmp_path) == []
    finally:
        await direct.dispose()
