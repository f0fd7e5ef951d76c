"""Keep the holds of work still in progress from expiring, and see every settlement through.

A hold's TTL is how the sweeper tells a dead process's holds from live ones. Work that
outlives the TTL (a long stream, a client that stops reading and lets the server wait in
its send) must not lose its hold, or the settlement would find nothing to charge and the
work would be free. Every process tracks its live holds here and renews them all on a
timer, whatever the request is doing. Settlements run through `finish`, in tasks of their
own (a request cancelled by its client cannot cancel its settlement), and forget the hold
when done; `drain` waits for those in flight at shutdown.

`settle` adds what makes a served request always charged: a charge the database refuses
is written to the settlement journal (ledger/journal.py, fsync'd) before the task ends, so
before the caller shows the client its cost; it is then retried in the background until
the database takes it. Its hold stays tracked meanwhile (renewed, and skipped by this
process's sweeper). If the hold is gone when the retry lands (the process died, and the
hold expired and was swept before a new process replayed the journal), the charge is
posted late (`post_late_charge`): the swept hold's usage row gets the real usage and the
charge is taken from the balance, even below zero. The happy path costs nothing more: no
file is opened and nothing is fsync'd unless a settlement fails.

With credit leases on (`leases.size` > 0), `reserve` serves chat holds from
this process's lease on the account (ledger/leases.py) instead of a hold row; such a hold
needs no renewal (its lease is renewed by the lease book's tick), and its settlement goes
on the lease's row, journaled the same way if the database refuses it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from datetime import timedelta

from minitoolai.db.engine import Database
from minitoolai.db.tx import Tx
from minitoolai.ledger.holds import Hold, UsageRecord, reserve, settle
from minitoolai.ledger.journal import PendingSettlement, SettlementJournal
from minitoolai.ledger.late import post_late_charge
from minitoolai.ledger.lease_settlements import settle_leased
from minitoolai.ledger.leases import Lease, LeaseBook, Unleased
from minitoolai.ledger.undo import Undoer
from minitoolai.observability import metrics

log = logging.getLogger(__name__)
CHUNK = 500
RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between retries of journaled settlements


class HoldKeeper:
    def __init__(self, db: Database, ttl_seconds: int, max_age_seconds: float = 86_400,
                 journal: SettlementJournal | None = None,
                 leases: LeaseBook | None = None) -> None:
        self._db = db
        self.leases = leases
        self._leased: dict[str, tuple[Lease, int]] = {}  # request id: its lease, its hold
        self._ttl = ttl_seconds
        self._max_age = max_age_seconds  # past this, a hold is someone's bug: let it expire
        self._live: dict[str, float] = {}
        self._settling: set[asyncio.Task] = set()
        self.journal = journal
        self.pending: dict[str, PendingSettlement] = {}  # journaled, not yet in the database
        self._retry_now = asyncio.Event()
        self.undoer = Undoer()  # releases the database refused, retried while it is away

    async def reserve(self, *, request_id: str, account_id: int, key_id: str | None,
                      amount: int, kind: str, model: str | None = None) -> Hold:
        """Hold credit for a request this process will settle itself: from its credit lease
        when leases are on (and the key has no expiry, allowlist or monthly limit), else as
        a hold row (tracked, renewed). Raises what `holds.reserve` refuses with (REFUSALS)."""
        if self.leases is not None:
            try:
                lease = await self.leases.take(account_id, key_id, amount)
            except Unleased:
                pass
            else:
                self._leased[request_id] = (lease, amount)
                return Hold(request_id, account_id, key_id, amount)
        hold = await reserve(self._db, request_id=request_id, account_id=account_id,
                             key_id=key_id, amount=amount, kind=kind, ttl_seconds=self._ttl,
                             model=model)
        self.track(request_id)
        return hold

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

    def settle(self, request_id: str, cost: int, record: UsageRecord, *,
               account_id: int | None) -> asyncio.Task:
        """`finish` a settlement that is journaled if the database refuses it."""
        return self.finish(request_id, self.settle_or_journal(
            request_id, cost, record, account_id=account_id))

    async def settle_or_journal(self, request_id: str, cost: int, record: UsageRecord, *,
                                account_id: int | None) -> int | None:
        """Settle; if the database fails, journal the settlement (fsync'd) and return None:
        the background retry makes it. A release (`cost` 0) is retried in the background
        without a journal. Raises only if the journal cannot be written."""
        leased = self._leased.pop(request_id, None)
        if leased is not None:
            lease, hold = leased
            charge = max(0, min(cost, hold))  # never more than the hold, as settle_tx
            self.leases.settling(lease, hold, charge)
            entry = PendingSettlement(request_id, account_id, charge, record, lease.id,
                                      lease.key_id)
        else:
            entry = PendingSettlement(request_id, account_id, cost, record)
        started = time.monotonic()
        try:
            charged = await self._settle(entry)
            metrics.SETTLE_SECONDS.observe(time.monotonic() - started)
        except Exception as exc:  # whatever the database raised
            if entry.cost <= 0:
                # a release (nothing to charge) is not journaled, but retried in the
                # background: left to the sweeper, the held credit would refuse the
                # customer's next requests until the hold expired (ledger/undo.py). (A
                # leased hold's credit is back in its lease already: only its usage
                # record is retried.)
                self._landed(entry)
                self.undoer.later(f"the release of {request_id}",
                                  functools.partial(self._settle, entry),
                                  give_up_after=self._ttl, error=exc)
                return None
            if self.journal is None:
                self._landed(entry)  # given up: not on its way any more
                raise
            log.error("settling %s failed (%s: %s); journaled, and retried until the"
                      " database takes it", entry.request_id, exc.__class__.__name__, exc)
        else:
            self._landed(entry)
            if charged is not None and entry.lease_id is not None:
                metrics.count_settled(record.endpoint, record.model, charged,
                                      record.prompt_tokens, record.completion_tokens)
            return charged
        self.pending[entry.request_id] = entry  # before the await: _settled keeps the hold
        try:
            await asyncio.to_thread(self.journal.record, [entry])
        except BaseException:
            self.pending.pop(entry.request_id, None)
            self._landed(entry)
            raise
        self._retry_now.set()
        return None

    async def _settle(self, entry: PendingSettlement) -> int | None:
        """Make one settlement: on its credit lease's row, or its hold row's."""
        if entry.lease_id is not None:
            # batched with this moment's other leased settlements (a journal replayed in a
            # process with leases off settles alone)
            settle_on_lease = (self.leases.settlements.settle if self.leases is not None
                               else functools.partial(settle_leased, self._db))
            return await settle_on_lease(
                lease_id=entry.lease_id, request_id=entry.request_id,
                account_id=entry.account_id, key_id=entry.key_id, charge=entry.cost,
                record=entry.record)
        return await settle(self._db, entry.request_id, entry.cost, entry.record,
                            account_id=entry.account_id)

    def _landed(self, entry: PendingSettlement) -> None:
        if entry.lease_id is not None and self.leases is not None:
            self.leases.landed(entry.lease_id, entry.cost)

    def _settled(self, request_id: str, task: asyncio.Task) -> None:
        self._settling.discard(task)
        if request_id not in self.pending:  # a journaled hold stays live until settled
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
        expires_at = self._db.now() + timedelta(seconds=self._ttl)
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

    # ---- the journal ----------------------------------------------------------------------
    async def open_journal(self) -> int:
        """At start: adopt the journals of processes that died, to be replayed by `run`.
        Returns how many settlements were adopted."""
        if self.journal is None:
            return 0
        adopted = await asyncio.to_thread(self.journal.adopt)
        for entry in adopted:
            self.pending[entry.request_id] = entry
            self.track(entry.request_id)  # renewed (if the hold still exists) and not swept
        if adopted:
            log.warning("replaying %d settlement(s) journaled by a process that stopped",
                        len(adopted))
            self._retry_now.set()
        return len(adopted)

    def close_journal(self) -> None:
        if self.journal is not None:
            if self.pending:
                log.error("%d settlement(s) still not in the database stay journaled in %s;"
                          " the next start replays them", len(self.pending), self.journal.path)
            self.journal.close()

    async def retry_pending(self) -> int:
        """Try every journaled settlement once; returns how many are still pending."""
        for request_id, entry in list(self.pending.items()):
            try:
                charged = await self._settle(entry)
                if charged is None and entry.lease_id is None:
                    # the hold is gone: settled already, or swept (a leased settlement
                    # charges the account itself when its lease was swept)
                    await post_late_charge(self._db, entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - still failing: the next round retries
                log.warning("journaled settlement %s still fails: %s: %s", request_id,
                            exc.__class__.__name__, exc)
                continue
            self.pending.pop(request_id, None)
            self.forget(request_id)
            self._landed(entry)
            self.journal.resolve(request_id)
            log.info("journaled settlement %s is in the database", request_id)
        return len(self.pending)

    async def run_retries(self) -> None:
        """Retry journaled settlements, sooner after a new one, forever (in `run`)."""
        delay = RETRY_FIRST
        while True:
            if not self.pending:
                await self._retry_now.wait()
                delay = RETRY_FIRST
            self._retry_now.clear()
            await asyncio.sleep(delay)  # give the database a moment to come back
            if await self.retry_pending():
                delay = min(delay * 2, RETRY_MAX)

    async def run(self) -> None:
        """Renew every third of the TTL, and retry journaled settlements, forever (a
        lifespan task)."""
        retries = asyncio.create_task(self.run_retries(), name="settlement-retries")
        leases = (asyncio.create_task(self.leases.run(), name="credit-leases")
                  if self.leases is not None else None)
        try:
            await self._run_renewals()
        finally:
            retries.cancel()
            if leases is not None:
                leases.cancel()
            await asyncio.gather(retries, *([leases] if leases else []),
                                 return_exceptions=True)

    async def close_leases(self) -> None:
        """At shutdown, after `drain`: give this process's credit leases back."""
        if self.leases is not None:
            await self.leases.close()

    async def _run_renewals(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self._ttl / 3))
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception:  # a transient database error: the next round retries
                log.exception("renewing live holds failed; retrying")
