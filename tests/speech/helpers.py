"""Helpers shared by the speech tests: balances and usage rows read from the database."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from minitoolai.accounts.store import get_account
from minitoolai.db.engine import Database
from minitoolai.db.tables import holds, usage


async def account_state(database_url: str, account_id: int) -> tuple[int, int]:
    """(balance, held) in nanodollars."""
    db = Database(database_url, pool_size=1)
    try:
        account = await get_account(db, account_id)
    finally:
        await db.dispose()
    return account.balance, account.held


async def usage_rows(database_url: str, account_id: int) -> list:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            result = await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                        .order_by(usage.c.created_at))
            return list(result)
    finally:
        await db.dispose()


async def wait_settled(database_url: str, account_id: int, attempts: int = 600) -> None:
    """Wait until the account has no open hold (settlement after a client went away happens
    after the client has stopped listening). Bounded; fails rather than hangs."""
    db = Database(database_url, pool_size=1)
    try:
        for _ in range(attempts):
            async with db.read() as conn:
                open_holds = (await conn.execute(
                    select(holds.c.id).where(holds.c.account_id == account_id))).all()
            if not open_holds:
                return
            await asyncio.sleep(0.05)
    finally:
        await db.dispose()
    raise AssertionError("the hold was never settled")
