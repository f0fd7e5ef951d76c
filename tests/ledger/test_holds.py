"""Holds and settlement against a real database, to the nanodollar."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from minitoolai.accounts.store import get_account, update_key
from minitoolai.errors import InsufficientCredit
from minitoolai.ledger.holds import UsageRecord, release, reserve, reserve_many, settle
from minitoolai.ledger.sweeper import sweep_expired
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer

RECORD = UsageRecord(endpoint="chat", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5)


async def test_settle_charges_cost_and_releases_rest(db, database_url):
    customer = await make_customer(database_url, 1_000_000)
    await reserve(db, request_id="r1", account_id=customer.account_id, key_id=customer.key_id,
                  amount=600_000, kind="chat", ttl_seconds=60)
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (1_000_000, 600_000)
    assert await settle(db, "r1", 4_500, RECORD, account_id=customer.account_id) == 4_500
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (995_500, 0)
    assert await verify(db) == []


async def test_settle_twice_charges_once(db, database_url):
    customer = await make_customer(database_url, 1_000_000)
    await reserve(db, request_id="r2", account_id=customer.account_id, key_id=customer.key_id,
                  amount=10_000, kind="chat", ttl_seconds=60)
    assert await settle(db, "r2", 7_000, RECORD, account_id=customer.account_id) == 7_000
    assert await settle(db, "r2", 7_000, RECORD, account_id=customer.account_id) is None
    assert (await get_account(db, customer.account_id)).balance == 993_000
    assert await verify(db) == []


async def test_charge_never_exceeds_hold(db, database_url):
    customer = await make_customer(database_url, 1_000_000)
    await reserve(db, request_id="r3", account_id=customer.account_id, key_id=None,
                  amount=10_000, kind="chat", ttl_seconds=60)
    assert await settle(db, "r3", 50_000, RECORD, account_id=customer.account_id) == 10_000
    assert (await get_account(db, customer.account_id)).balance == 990_000


async def test_reserve_refuses_beyond_available(db, database_url):
    customer = await make_customer(database_url, 100)
    with pytest.raises(InsufficientCredit) as info:
        await reserve(db, request_id="r4", account_id=customer.account_id, key_id=None,
                      amount=101, kind="chat", ttl_seconds=60)
    assert "0.0000001" in info.value.message and info.value.status_code == 402
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (100, 0)


async def test_key_spend_limit_is_enforced(db, database_url):
    customer = await make_customer(database_url, 1_000_000, spend_limit=5_000)
    await reserve(db, request_id="r5", account_id=customer.account_id, key_id=customer.key_id,
                  amount=5_000, kind="chat", ttl_seconds=60)
    with pytest.raises(InsufficientCredit) as info:
        await reserve(db, request_id="r6", account_id=customer.account_id,
                      key_id=customer.key_id, amount=1, kind="chat", ttl_seconds=60)
    assert info.value.code == "key_spend_limit"
    # the refused reserve rolled back the account's hold too
    assert (await get_account(db, customer.account_id)).held == 5_000
    await release(db, "r5", RECORD, account_id=customer.account_id)
    assert await verify(db) == []


@pytest.mark.parametrize("limited", ["account", "key"])
async def test_reserve_many_takes_every_hold_or_none(db, database_url, limited):
    """The n holds of one request: the third does not fit, so none is taken, nothing is
    written, and the refusal names the three together (with the credit as it was)."""
    customer = await make_customer(database_url, 25_000 if limited == "account" else 10**6,
                                   spend_limit=25_000 if limited == "key" else None)
    with pytest.raises(InsufficientCredit) as info:
        await reserve_many(db, request_ids=["m-1", "m-2", "m-3"],
                           account_id=customer.account_id, key_id=customer.key_id,
                           amounts=[10_000] * 3, kind="image", ttl_seconds=60)
    message = info.value.message
    assert "needs a hold of $0.00003" in message, message
    if limited == "account":
        assert "available balance $0.000025 (balance $0.000025, held $0.00)" in message, message
    else:
        assert info.value.code == "key_spend_limit"
    account = await get_account(db, customer.account_id)
    assert account.held == 0
    async with db.read() as conn:
        assert (await conn.execute(sa.text("SELECT count(*) FROM holds"))).scalar() == 0
        assert (await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar() == 0
    holds = await reserve_many(db, request_ids=["m-1", "m-2"],
                               account_id=customer.account_id, key_id=customer.key_id,
                               amounts=[10_000] * 2, kind="image", ttl_seconds=60)
    assert [h.request_id for h in holds] == ["m-1", "m-2"]
    assert (await get_account(db, customer.account_id)).held == 20_000
    for hold in holds:
        await release(db, hold.request_id, RECORD, account_id=customer.account_id)
    assert await verify(db) == []


async def test_reserve_many_names_the_limit_that_refused(db, database_url):
    """The key's message is chosen with the holds this transaction took before the refused
    one taken off: here the monthly limit refuses the third image, and the lifetime limit
    (45,000: the three fit) must not be named for it."""
    customer = await make_customer(database_url, 10**6)
    await update_key(db, customer.key_id, None, spend_limit=45_000, month_limit=25_000)
    with pytest.raises(InsufficientCredit) as info:
        await reserve_many(db, request_ids=["k-1", "k-2", "k-3"],
                           account_id=customer.account_id, key_id=customer.key_id,
                           amounts=[10_000] * 3, kind="image", ttl_seconds=60)
    assert info.value.code == "key_monthly_limit", info.value.message
    assert "needs a hold of $0.00003" in info.value.message
    assert (await get_account(db, customer.account_id)).held == 0
    assert await verify(db) == []


async def test_concurrent_reserves_never_overspend(db, database_url):
    customer = await make_customer(database_url, 50_000)

    async def one(i):
        try:
            await reserve(db, request_id=f"c{i}", account_id=customer.account_id, key_id=None,
                          amount=1_000, kind="chat", ttl_seconds=60)
            return True
        except InsufficientCredit:
            return False

    results = await asyncio.gather(*(one(i) for i in range(80)))
    assert sum(results) == 50
    account = await get_account(db, customer.account_id)
    assert account.held == 50_000 and account.balance == 50_000
    assert await verify(db) == []


async def test_key_limit_refusals_in_one_batch_undo_their_account_hold(db, database_url):
    """Reserves submitted together share a transaction (group commit). A key-limit refusal
    raises after its account update: that update must go, and the others must commit
    exactly once (on PostgreSQL the batch is rolled back and each op runs alone)."""
    customer = await make_customer(database_url, 1_000_000, spend_limit=5_000)

    async def one(i):
        try:
            await reserve(db, request_id=f"k{i}", account_id=customer.account_id,
                          key_id=customer.key_id, amount=1_000, kind="chat", ttl_seconds=60)
            return True
        except InsufficientCredit as exc:
            assert exc.code == "key_spend_limit"
            return False

    results = await asyncio.gather(*(one(i) for i in range(12)))
    assert sum(results) == 5
    assert (await get_account(db, customer.account_id)).held == 5_000
    for i, served in enumerate(results):
        if served:
            assert await settle(db, f"k{i}", 700, RECORD, account_id=customer.account_id) == 700
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (1_000_000 - 5 * 700, 0)
    assert await verify(db) == []


async def test_two_servers_never_overspend_a_balance_or_a_key_limit(database_url):
    """Two server processes' executors (two Database objects, two connections) reserve and
    settle on one account and key at once: the row locks, not this process's batching,
    keep the balance and the key's limit, on SQLite and on PostgreSQL."""
    from minitoolai.db.engine import Database

    customer = await make_customer(database_url, 60_000, spend_limit=40_000)
    servers = [Database(database_url, pool_size=2), Database(database_url, pool_size=2)]

    async def one(i):
        db = servers[i % 2]
        try:
            await reserve(db, request_id=f"t{i}", account_id=customer.account_id,
                          key_id=customer.key_id, amount=1_000, kind="chat", ttl_seconds=60)
        except InsufficientCredit:
            return 0
        await asyncio.sleep(0)
        return await settle(db, f"t{i}", 1_000 if i % 3 else 400, RECORD,
                            account_id=customer.account_id)

    try:
        charges = await asyncio.gather(*(one(i) for i in range(120)))
        served = [c for c in charges if c]
        # every reserve needs a full 1,000 free under the key's limit, so at most 40 holds
        # fit at a time; settlements free some, so more than 40 may be served in all, but
        # never more than the limit is spent
        assert sum(served) <= 40_000 and len(served) < 120  # the limit did bind
        account = await get_account(servers[0], customer.account_id)
        assert account.held == 0 and account.balance == 60_000 - sum(served)
        async with servers[0].read() as conn:
            spent, held = (await conn.execute(
                sa.text("SELECT spent, held FROM api_keys WHERE id = :id"),
                {"id": customer.key_id})).one()
        assert (spent, held) == (sum(served), 0)
        assert await verify(servers[0]) == []
    finally:
        for db in servers:
            await db.dispose()


async def test_sweeper_releases_expired_holds(db, database_url):
    customer = await make_customer(database_url, 10_000)
    await reserve(db, request_id="old", account_id=customer.account_id, key_id=customer.key_id,
                  amount=4_000, kind="chat", ttl_seconds=-1)
    await reserve(db, request_id="new", account_id=customer.account_id, key_id=customer.key_id,
                  amount=1_000, kind="chat", ttl_seconds=60)
    assert await sweep_expired(db) == 1
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (10_000, 1_000)
    assert await verify(db) == []

