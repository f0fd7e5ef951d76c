"""What the credit-lease tests share (test_leases.py, test_lease_settlements.py): a server
process's keeper with its lease book, and ways to age, tick and read its leases."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from minitoolai.accounts.store import get_account
from minitoolai.db.engine import Database
from minitoolai.db.tables import credit_leases
from minitoolai.ledger.holds import UsageRecord
from minitoolai.ledger.keeper import HoldKeeper
from minitoolai.ledger.leases import LeaseBook
from minitoolai.ledger.settings import LeaseSettings

RECORD = UsageRecord(endpoint="chat", model="gpt-4o-mini", prompt_tokens=10,
                     completion_tokens=5)


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
