"""A key's own conditions, enforced in the hold's conditional UPDATE on SQLite and
PostgreSQL: a monthly (calendar-month, UTC) spending limit that refuses exactly at its
boundary under concurrent holds and starts again from zero in a new month (by the
database's clock), a model allowlist whose refusals charge and hold nothing, and an
expiry. Each test ends with `ledger verify`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

import minitoolai.db.engine as engine_module
from minitoolai.accounts.auth import Authenticator
from minitoolai.accounts.store import get_account, get_key, update_key
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from minitoolai.errors import AuthenticationFailed, InsufficientCredit, PermissionDenied
from minitoolai.ledger.holds import UsageRecord, month_of, release, reserve, settle
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer

RECORD = UsageRecord(endpoint="chat", model="gpt-4o-mini", prompt_tokens=10, completion_tokens=5)


def set_database_clock(monkeypatch, moment: datetime) -> None:
    """The database's clock (Database.now: this machine's, corrected by the measured
    offset) reads `moment`, and moves on from it as real time does."""
    real = engine_module.utcnow
    start = real()
    monkeypatch.setattr(engine_module, "utcnow", lambda: moment + (real() - start))


async def hold(db, customer, request_id, amount, model="gpt-4o-mini"):
    return await reserve(db, request_id=request_id, account_id=customer.account_id,
                         key_id=customer.key_id, amount=amount, kind="chat",
                         ttl_seconds=60, model=model)


async def test_monthly_limit_refuses_exactly_at_its_boundary_under_concurrency(db,
                                                                               database_url):
    """40 requests at once, each holding 1,000 and settling all of it, against a monthly
    limit of 10,000 (and a lifetime limit far above it): exactly ten are served, the key
    spends exactly the limit, and the next nanodollar is refused with the monthly code."""
    customer = await make_customer(database_url, 10**9, spend_limit=10**8)
    await update_key(db, customer.key_id, customer.account_id, month_limit=10_000)

    async def one(i):
        try:
            await hold(db, customer, f"m{i}", 1_000)
        except InsufficientCredit as exc:
            assert exc.code == "key_monthly_limit" and exc.status_code == 402
            return 0
        await asyncio.sleep(0)  # let the others race while this one is held
        return await settle(db, f"m{i}", 1_000, RECORD, account_id=customer.account_id)

    charged = await asyncio.gather(*(one(i) for i in range(40)))
    assert sum(charged) == 10_000 and charged.count(1_000) == 10
    key = await get_key(db, customer.key_id)
    assert (key.spent, key.held, key.spent_in(month_of(db.now()))) == (10_000, 0, 10_000)
    with pytest.raises(InsufficientCredit) as info:
        await hold(db, customer, "one-more", 1)
    assert "monthly spending limit of $0.00001" in info.value.message
    async with db.read() as conn:
        billed = await conn.scalar(sa.select(sa.func.sum(usage.c.cost))
                                   .where(usage.c.key_id == customer.key_id))
    assert billed == 10_000
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (10**9 - 10_000, 0)
    assert await verify(db) == []


async def test_open_holds_count_against_the_monthly_limit(db, database_url):
    """Holds not yet settled take their share of the month: the limit is never promised
    twice, and a release gives it back."""
    customer = await make_customer(database_url, 10**9)
    await update_key(db, customer.key_id, customer.account_id, month_limit=5_000)
    await hold(db, customer, "a", 3_000)
    with pytest.raises(InsufficientCredit):
        await hold(db, customer, "b", 2_001)
    await hold(db, customer, "b", 2_000)
    await release(db, "a", RECORD, account_id=customer.account_id)
    await hold(db, customer, "c", 3_000)
    await settle(db, "b", 2_000, RECORD, account_id=customer.account_id)
    await settle(db, "c", 500, RECORD, account_id=customer.account_id)
    key = await get_key(db, customer.key_id)
    assert (key.spent, key.held, key.spent_in(month_of(db.now()))) == (2_500, 0, 2_500)
    assert await verify(db) == []


async def test_a_new_month_starts_the_monthly_limit_from_zero(db, database_url, monkeypatch):
    """By the database's clock: the last second of January is still January (refused),
    the first of February is a new month (served), and the lifetime total goes on."""
    customer = await make_customer(database_url, 10**9)
    await update_key(db, customer.key_id, customer.account_id, month_limit=4_000)
    set_database_clock(monkeypatch, datetime(2031, 1, 31, 23, 59, 50, tzinfo=UTC))
    await hold(db, customer, "jan-1", 4_000)
    await settle(db, "jan-1", 4_000, RECORD, account_id=customer.account_id)
    with pytest.raises(InsufficientCredit) as info:
        await hold(db, customer, "jan-2", 1)
    assert info.value.code == "key_monthly_limit"
    key = await get_key(db, customer.key_id)
    assert key.spent_in(203101) == 4_000

    set_database_clock(monkeypatch, datetime(2031, 2, 1, 0, 0, 1, tzinfo=UTC))
    await hold(db, customer, "feb-1", 4_000)
    with pytest.raises(InsufficientCredit):  # February's own limit, reached by the hold
        await hold(db, customer, "feb-2", 1)
    await settle(db, "feb-1", 1_500, RECORD, account_id=customer.account_id)
    key = await get_key(db, customer.key_id)
    assert (key.spent_in(203102), key.spent_in(203101), key.spent) == (1_500, 0, 5_500)
    await hold(db, customer, "feb-3", 2_500)  # exactly what is left of February
    await release(db, "feb-3", RECORD, account_id=customer.account_id)
    assert await verify(db) == []


async def test_a_model_outside_the_allowlist_is_refused_and_charged_nothing(db,
                                                                             database_url):
    """Refusals and admissions submitted together (one group-committed batch on
    PostgreSQL): each refusal is a 403 naming the model, holds nothing and writes no usage;
    every admitted hold commits exactly once."""
    customer = await make_customer(database_url, 1_000_000)
    await update_key(db, customer.key_id, customer.account_id,
                     models=["gpt-4o-mini", "tts-1"])

    async def one(i):
        model = "gpt-4o-mini" if i % 2 else "gpt-4o"
        try:
            await hold(db, customer, f"a{i}", 1_000, model=model)
            return True
        except PermissionDenied as exc:
            assert (exc.status_code, exc.code, exc.param) == (403, "model_not_allowed", "model")
            assert "'gpt-4o'" in exc.message and "gpt-4o-mini, tts-1" in exc.message
            return False

    served = await asyncio.gather(*(one(i) for i in range(20)))
    assert served.count(True) == 10
    account = await get_account(db, customer.account_id)
    key = await get_key(db, customer.key_id)
    assert account.held == key.held == 10_000 and account.balance == 1_000_000
    for i, ok in enumerate(served):
        if ok:
            await settle(db, f"a{i}", 100, RECORD, account_id=customer.account_id)
    async with db.read() as conn:
        rows = (await conn.execute(sa.select(usage.c.request_id)
                                   .where(usage.c.key_id == customer.key_id))).all()
    assert sorted(r.request_id for r in rows) == sorted(
        f"a{i}" for i, ok in enumerate(served) if ok)
    with pytest.raises(PermissionDenied):  # a request without a model cannot pass a list
        await hold(db, customer, "none", 1, model=None)
    await update_key(db, customer.key_id, customer.account_id, models=None)
    await hold(db, customer, "any", 1, model="gpt-4o")  # the list lifted: every model
    await release(db, "any", RECORD, account_id=customer.account_id)
    assert (await get_account(db, customer.account_id)).balance == 1_000_000 - 1_000
    assert await verify(db) == []


async def test_an_expired_key_is_refused_by_the_hold_and_by_authentication(db, database_url,
                                                                            monkeypatch):
    customer = await make_customer(database_url, 1_000_000)
    expiry = datetime(2032, 6, 1, 12, 0, tzinfo=UTC)
    await update_key(db, customer.key_id, customer.account_id, expires_at=expiry)
    auth = Authenticator(db, cache_seconds=60)
    set_database_clock(monkeypatch, expiry - timedelta(seconds=30))
    principal = await auth.authenticate(f"Bearer {customer.key}")
    assert principal.expires_at == expiry
    await hold(db, customer, "before", 1_000)
    await settle(db, "before", 1_000, RECORD, account_id=customer.account_id)

    set_database_clock(monkeypatch, expiry)
    with pytest.raises(AuthenticationFailed) as info:
        await hold(db, customer, "after", 1_000)  # a request authenticated just before
    assert (info.value.status_code, info.value.code) == (401, "expired_api_key")
    assert "expired on 2032-06-01 12:00 UTC" in info.value.message
    with pytest.raises(AuthenticationFailed) as info:  # the cached lookup is not trusted
        await auth.authenticate(f"Bearer {customer.key}")
    assert info.value.code == "expired_api_key"
    account = await get_account(db, customer.account_id)
    assert (account.balance, account.held) == (999_000, 0)
    # extending the expiry revives it
    await update_key(db, customer.key_id, customer.account_id,
                     expires_at=expiry + timedelta(days=30))
    await hold(db, customer, "extended", 1_000)
    await release(db, "extended", RECORD, account_id=customer.account_id)
    assert await verify(db) == []


async def test_two_servers_never_overspend_a_monthly_limit(database_url):
    """Two executors (two servers' connections) on one key at once: the row lock, not one
    process's batching, keeps the month's limit."""
    customer = await make_customer(database_url, 10**9)
    servers = [Database(database_url, pool_size=2), Database(database_url, pool_size=2)]
    try:
        await update_key(servers[0], customer.key_id, customer.account_id, month_limit=25_000)

        async def one(i):
            db = servers[i % 2]
            try:
                await hold(db, customer, f"t{i}", 1_000)
            except InsufficientCredit:
                return 0
            await asyncio.sleep(0)
            return await settle(db, f"t{i}", 1_000, RECORD, account_id=customer.account_id)

        charged = await asyncio.gather(*(one(i) for i in range(60)))
        assert sum(charged) == 25_000
        assert await verify(servers[0]) == []
    finally:
        for db in servers:
            await db.dispose()
