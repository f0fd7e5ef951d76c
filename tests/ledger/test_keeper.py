"""Live holds are renewed whatever their request is doing, and forgotten once settled."""

from __future__ import annotations

from minitoolai.ledger.holds import UsageRecord, reserve, settle
from minitoolai.ledger.keeper import HoldKeeper
from minitoolai.ledger.sweeper import sweep_expired
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer


async def test_tracked_holds_survive_the_sweeper(db, database_url):
    customer = await make_customer(database_url, 10_000)
    keeper = HoldKeeper(db, ttl_seconds=60)
    for rid in ("live", "dead"):
        await reserve(db, request_id=rid, account_id=customer.account_id, key_id=None,
                      amount=1_000, kind="chat", ttl_seconds=-1)
    keeper.track("live")
    assert await keeper.renew() == 1
    assert await sweep_expired(db) == 1  # only the untracked one (a dead process's)
    assert await settle(db, "live", 700, UsageRecord(endpoint="x", model="m"),
                        account_id=customer.account_id) == 700
    keeper.forget("live")
    assert keeper.live == 0
    assert await verify(db) == []


async def test_holds_live_too_long_stop_being_renewed(db, database_url):
    keeper = HoldKeeper(db, ttl_seconds=60, max_age_seconds=-1)
    keeper.track("forgotten-by-a-bug")
    assert await keeper.renew() == 0 and keeper.live == 0
