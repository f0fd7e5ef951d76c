"""Credit leases (ledger/leases.py): exact charges, no overspend across processes, key limits,
a dead process's lease returned, and `ledger verify` sound at every step.

Every test runs on SQLite and on PostgreSQL (the outage one on PostgreSQL only: its fault is
a TCP proxy in front of the server)."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from minitoolai.accounts.store import update_key
from minitoolai.db.engine import Database
from minitoolai.errors import InsufficientCredit, PermissionDenied
from minitoolai.ledger.holds import reserve
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
from tests.ledger.leasing import (
    RECORD,
    both_ways,
    credit,
    expire,
    hold,
    keeper,
    leases_in_db,
    room,
    tick,
)


@pytest.fixture
def pg_only(database_url):
    if not database_url.startswith("postgresql"):
        pytest.skip("the outage is a TCP proxy in front of PostgreSQL")


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
