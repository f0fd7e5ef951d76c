"""Release holds, and return credit leases, whose process died before settling them
(kill -9, power loss)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container

from sqlalchemy import select

from minitoolai.db.engine import Database
from minitoolai.db.tables import credit_leases, holds
from minitoolai.db.tx import Tx
from minitoolai.ledger.holds import UsageRecord, month_of, release
from minitoolai.ledger.lease_settlements import lease_order
from minitoolai.ledger.leases import DROP_LEASE, FOLD_ACCOUNT, FOLD_KEY, locked_row

log = logging.getLogger(__name__)

# a lease still expired when its row is locked (not renewed or returned meanwhile)
LOCK_EXPIRED = ("SELECT account_id, key_id, amount, charged FROM credit_leases"
                " WHERE id = :id AND expires_at < :now")


async def sweep_expired(db: Database, *, kinds: tuple[str, ...] | None = None,
                        keep: Container[str] = ()) -> int:
    """Release every expired hold but those in `keep` (this process's journaled
    settlements: their holds are charged, not released); returns how many were released."""
    query = (select(holds.c.id, holds.c.kind, holds.c.account_id)
             .where(holds.c.expires_at < db.now()).order_by(holds.c.account_id))
    if kinds:
        query = query.where(holds.c.kind.in_(kinds))
    async with db.read() as conn:
        expired = (await conn.execute(query)).all()
    released = 0
    for row in expired:
        if row.id in keep:
            continue
        record = UsageRecord(endpoint=row.kind, model="(expired hold)", status="expired")
        if await release(db, row.id, record, account_id=row.account_id) is not None:
            released += 1
        await asyncio.sleep(0)  # thousands of releases must not starve the event loop
    if released:
        log.warning("released %d expired hold(s) left by a process that stopped", released)
    return released


async def sweep_expired_leases(db: Database) -> int:
    """Return the leases of processes that died (expired by the database's clock): their
    charges folded into the balance, the rest given back. Returns how many."""
    now = db.now()

    async with db.read() as conn:
        expired = (await conn.execute(
            select(credit_leases.c.id, credit_leases.c.account_id)
            .where(credit_leases.c.expires_at < now)
            .order_by(credit_leases.c.account_id))).all()
    returned = 0
    for lease_id, account_id in expired:
        params = {"id": lease_id, "now": now, "month": month_of(now)}

        async def sweep(tx: Tx, params=params) -> bool:
            row = await locked_row(tx, LOCK_EXPIRED, params)
            if row is None:
                return False  # renewed or returned meanwhile
            account, key_id, amount, charged = row
            change = {**params, "account_id": account, "key_id": key_id,
                      "charged": charged, "release": amount}
            await tx.execute(FOLD_ACCOUNT, change)
            if key_id is not None:
                await tx.execute(FOLD_KEY, change)
            await tx.execute(DROP_LEASE, change)
            return True

        if await db.run_ledger(sweep, order=lease_order(account_id)):
            returned += 1
            log.warning("returned the expired credit lease %s of account %s (its process"
                        " stopped)", lease_id, account_id)
    return returned


async def run_sweeper(db: Database, interval_seconds: float,
                      keep: Container[str] = ()) -> None:
    """Sweep forever (a lifespan task); errors are logged and the loop goes on."""
    while True:
        try:
            await sweep_expired(db, keep=keep)
            await sweep_expired_leases(db)  # a dead process's credit leases
        except asyncio.CancelledError:
            raise
        except Exception:  # the sweeper must outlive a transient database error
            log.exception("hold sweeper failed; retrying in %.0fs", interval_seconds)
        await asyncio.sleep(interval_seconds)
