"""Times that decide money come from the database's clock: a machine whose own clock is
two hours slow still writes holds that expire when the database says, and its sweeper does
not take live holds of other machines for expired ones."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text

import minitoolai.db.engine as engine_module
import minitoolai.ledger.holds as holds_module
from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.ledger.holds import reserve
from minitoolai.ledger.sweeper import sweep_expired
from tests.conftest import make_customer

SKEW = timedelta(hours=2)


def set_machine_clock(monkeypatch, skew: timedelta) -> None:
    """This machine's clock, wherever the code reads it, off by `skew`."""
    for module in (engine_module, holds_module):
        monkeypatch.setattr(module, "utcnow", lambda: utcnow() + skew)


async def test_a_machine_with_a_wrong_clock_uses_the_databases(database_url, monkeypatch):
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite is one machine: its clock is the database's")
    customer = await make_customer(database_url, 10**9)
    db = Database(database_url, pool_size=1)
    set_machine_clock(monkeypatch, -SKEW)  # 2 h slow
    try:
        offset = await db.sync_clock()
        assert abs(offset - SKEW) < timedelta(seconds=1)
        await reserve(db, request_id="clock-1", account_id=customer.account_id, key_id=None,
                      amount=1000, kind="chat", ttl_seconds=60)
        async with db.read() as conn:
            left = (await conn.execute(text(
                "SELECT EXTRACT(EPOCH FROM expires_at - now()) FROM holds"
                " WHERE id = 'clock-1'"))).scalar_one()
        # by the database's clock, not 2 h early (within the offset's own measuring error,
        # a round trip: the sync is checked to a second above)
        assert 55 < left < 61
        # a machine 2 h fast would have swept it at once with its own clock
        set_machine_clock(monkeypatch, SKEW)
        await db.sync_clock()
        assert await sweep_expired(db) == 0
    finally:
        await db.dispose()
