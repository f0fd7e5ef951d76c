"""Release holds, and return credit leases, whose process died before settling them
(kill -9, power loss)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Container

from sqlalchemy import select

from minitoolai.db.engine import Database
from minitoolai.db.tables import holds
from minitoolai.ledger.holds import UsageRecord, release
from minitoolai.ledger.leases import sweep_expired_leases

log = logging.getLogger(__name__)


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


async def run_sweeper(db: Database, interval_seconds: float,
                      keep: Container[str] = ()) -> None:
    """Sweep forever (a lifespan task); errors are logged and the loop goes on."""
    while True:
        try:
            await sweep_expired(db, keep=keep)
            await sweep_expired_leases(db)  # ledger/leases.py: a dead process's leases
        except asyncio.CancelledError:
            raise
        except Exception:  # the sweeper must outlive a transient database error
            log.exception("hold sweeper failed; retrying in %.0fs", interval_seconds)
        await asyncio.sleep(interval_seconds)
