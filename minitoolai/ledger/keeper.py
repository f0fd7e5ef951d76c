"""Keep the holds of work still in progress from expiring.

A hold's TTL is how the sweeper tells a dead process's holds from live ones. Work that
outlives the TTL (a long stream, a client that stops reading and lets the server wait in
its send) must not lose its hold, or the settlement would find nothing to charge and the
work would be free. Every process tracks its live holds here and renews them all on a
timer, whatever the request is doing. Settlements run through `finish`, in tasks of their
own (a request cancelled by its client cannot cancel its settlement), and forget the hold
when done; `drain` waits for those in flight at shutdown.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from datetime import timedelta

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tx import Tx
from minitoolai.observability import metrics

log = logging.getLogger(__name__)
CHUNK = 500


class HoldKeeper:
    def __init__(self, db: Database, ttl_seconds: int, max_age_seconds: float = 86_400) -> None:
        self._db = db
        self._ttl = ttl_seconds
        self._max_age = max_age_seconds  # past this, a hold is someone's bug: let it expire
        self._live: dict[str, float] = {}
        self._settling: set[asyncio.Task] = set()

    def track(self, request_id: str) -> None:
        self._live[request_id] = time.monotonic()

    def forget(self, request_id: str) -> None:
        self._live.pop(request_id, None)

    def finish(self, request_id: str, settlement: Awaitable) -> asyncio.Task:
        """Run a hold's settlement (or release) in a task of its own; callers that must
        wait for it shield it."""
        task = asyncio.get_running_loop().create_task(settlement)
        self._settling.add(task)
        task.add_done_callback(functools.partial(self._settled, request_id))
        return task

    def _settled(self, request_id: str, task: asyncio.Task) -> None:
        self._settling.discard(task)
        self.forget(request_id)
        if not task.cancelled() and task.exception() is not None:
            metrics.SETTLE_FAILURES.inc()
            log.error("settling %s failed (the sweeper will release its hold)", request_id,
                      exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for the settlements in flight (at shutdown)."""
        if self._settling:
            await asyncio.gather(*list(self._settling), return_exceptions=True)

    @property
    def live(self) -> int:
        return len(self._live)

    async def renew(self) -> int:
        """Push back the expiry of every live hold of this process; returns how many."""
        now = time.monotonic()
        for request_id, since in list(self._live.items()):
            if now - since > self._max_age:
                log.error("hold %s has been live for over %.0f s; no longer renewed",
                          request_id, self._max_age)
                self._live.pop(request_id, None)
        ids = list(self._live)
        expires_at = utcnow() + timedelta(seconds=self._ttl)
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start:start + CHUNK]
            names = ", ".join(f":id{i}" for i in range(len(chunk)))
            params = {f"id{i}": rid for i, rid in enumerate(chunk)}
            params["expires_at"] = expires_at

            async def push_back(tx: Tx, params=params, names=names) -> int:
                return await tx.execute(
                    f"UPDATE holds SET expires_at = :expires_at WHERE id IN ({names})", params)

            await self._db.run_ledger(push_back)
        return len(ids)

    async def run(self) -> None:
        """Renew every third of the TTL, forever (a lifespan task)."""
        while True:
            await asyncio.sleep(max(0.05, self._ttl / 3))
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # a transient database error: the next round retries
                log.exception("renewing live holds failed; retrying")
