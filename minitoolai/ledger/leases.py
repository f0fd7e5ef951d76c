"""Credit leases: several server processes serve one account without queueing on its row.

Without leases every request takes its account's row twice (the hold, the settlement), and
on PostgreSQL a row lock is held until its transaction's WAL flush: N processes serving
one busy account commit one after another. Online charging systems solve the same problem
for telephone gateways by granting quota: here each process takes a *lease*, a slice of
the account's credit (and of its key's spending limit), in one short transaction on the
account's row, and then

- reserves each request's hold from the lease in memory (no SQL at all);
- settles its requests, those of one moment in one statement, writing their usage rows and
  ledger entries and adding their charges to its lease's row (`charged`): the lease row is
  this process's alone, so nobody waits on it (ledger/lease_settlements.py);
- every tick (`leases.tick_seconds`) folds what its leases charged into the account's
  balance and the key's spending, renews them, and gives back every idle lease;
- tops a lease up when a hold does not fit; the grant shrinks to what is available (at
  most half of what is left, so other processes get some), and is never less than the
  request needs: a small account can spend its whole balance, and a request bigger than a
  lease still works.

The money invariants (checked by `ledger verify`, ledger/verify.py), per account:

    held    = sum of hold rows + sum of its leases' `amount`
    balance = sum of ledger entries + sum of its leases' `charged`  (charged, not yet folded)

and per key: held = hold rows + leases' amounts, spent + leases' `charged` = usage costs.
A lease's `amount` covers its charges and the holds served from it, so `balance - held`
(the available credit) never goes below zero: no overspend, even across processes. The
available credit shown to customers is `balance - held`: credit leased to a server and not
yet used counts as held (at most `leases.size` per server and account, and only while that
server is serving the account).

Durability: a hold served from a lease is not written anywhere; what must survive a crash
is the settlement, which is written (or journaled, ledger/journal.py) before the client
sees its cost, as without leases. Settling is idempotent by request id (the usage row's
unique request id). A process that dies leaves its leases to expire (by the database's
clock); the sweeper (ledger/sweeper.py `sweep_expired_leases`) folds their charges and
returns the rest, which releases the holds of its unfinished requests exactly as expired
hold rows are released. A settlement that lands after its lease was swept (a journal
replayed late) is charged to the account directly, like a late charge (ledger/late.py).

Lock order, as everywhere: a lease's row, then its account's, then its key's. Lease ops
sort before the plain holds of the same account in a group-commit batch (`order`).

On SQLite too: there one file lock serves all processes, so leases do not add throughput
across servers, but they save each request its hold's writes (a reserve and a settlement
were eight statements and their pages; a leased settlement is three). Row locks are
PostgreSQL's (`locked_row`); SQLite's write transaction already excludes every other writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from minitoolai.db.engine import Database
from minitoolai.db.tx import Tx
from minitoolai.errors import InsufficientCredit, LedgerError
from minitoolai.ledger.holds import account_refusal, key_limit_refusal, month_of
from minitoolai.ledger.lease_settlements import SettlementBatch, lease_order
from minitoolai.ledger.settings import LeaseSettings

log = logging.getLogger(__name__)

LOCK_LEASE = "SELECT account_id, key_id, amount, charged FROM credit_leases WHERE id = :id"
# with the charges leases made and did not fold yet, for the refusal's message (the
# balance and held the customer sees, accounts/store.py)
ACCOUNT_FOR_GRANT = ("SELECT balance, held, (SELECT coalesce(sum(charged), 0) FROM credit_leases"
                     " WHERE account_id = :account_id) FROM accounts WHERE id = :account_id")
KEY_FOR_GRANT = ("SELECT spend_limit, spent, held, expires_at, models, month_limit FROM api_keys"
                 " WHERE id = :key_id")
GRANT_ACCOUNT = "UPDATE accounts SET held = held + :grant WHERE id = :account_id"
GRANT_KEY = "UPDATE api_keys SET held = held + :grant WHERE id = :key_id"
GROW_LEASE = ("UPDATE credit_leases SET amount = amount + :grant, expires_at = :expires_at"
              " WHERE id = :id")
NEW_LEASE = ("INSERT INTO credit_leases (id, account_id, key_id, owner, amount, charged,"
             " created_at, expires_at) VALUES (:id, :account_id, :key_id, :owner, :grant, 0,"
             " :now, :expires_at)")
# fold: the lease's charges into the balance and the key's spending, and `give_back` of
# its amount back to the available credit
FOLD_ACCOUNT = ("UPDATE accounts SET balance = balance - :charged, held = held - :release"
                " WHERE id = :account_id")
# the key's month as the plain settle keeps it (ledger/holds.py KEY_HOLD_SET, CHARGE_KEY)
FOLD_KEY = ("UPDATE api_keys SET spent = spent + :charged, held = held - :release,"
            " month_spent = CASE WHEN spent_month = :month THEN month_spent ELSE 0 END"
            " + :charged, spent_month = :month,"
            " last_used_at = CASE WHEN CAST(:charged AS BIGINT) > 0 THEN :now"
            " ELSE last_used_at END WHERE id = :key_id")
SHRINK_LEASE = ("UPDATE credit_leases SET amount = amount - :release, charged = 0,"
                " expires_at = :expires_at WHERE id = :id")
DROP_LEASE = "DELETE FROM credit_leases WHERE id = :id"


async def locked_row(tx: Tx, sql: str, params: dict) -> tuple | None:
    """The row `sql` reads, locked until the transaction ends: FOR UPDATE on PostgreSQL;
    on SQLite the ledger's write transaction (BEGIN IMMEDIATE) already excludes every
    other writer, and SQLite has no row locks."""
    return await tx.fetchone(sql + " FOR UPDATE" if tx.dialect == "postgresql" else sql, params)


# how long a key found restricted (expiry, allowlist, monthly limit) takes hold rows before
# a grant looks at it again (its settings may have been lifted)
RESTRICTED_RECHECK_SECONDS = 60.0


class Unleased(Exception):
    """This request's key is not served from leases: take a hold row instead."""


@dataclass(eq=False)
class Lease:
    """One process's lease on one account (and key), as this process sees it.

    `room` is what new holds may take: never more than the lease's amount in the database
    less its charges, the holds it serves, and the charges on their way to the database
    (`inflight`). Changed only on the event loop, without awaiting in between."""

    id: str
    account_id: int
    key_id: str | None
    room: int = 0
    holds: int = 0  # holds served from it and not settled
    inflight: int = 0  # charges submitted and not yet known in the database
    busy: bool = True  # a hold was taken since the last tick
    in_db: bool = False
    lost: bool = False  # its row is gone (swept): settlements go to the account directly
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LeaseBook:
    """This process's leases, one per (account, key) it serves."""

    def __init__(self, db: Database, settings: LeaseSettings, owner: str | None = None) -> None:
        self._db = db
        self.size = settings.size_nano
        self._ttl = settings.ttl_seconds
        self.tick_seconds = settings.tick_seconds
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}"[:128]
        self._leases: dict[tuple[int, str | None], Lease] = {}
        # keys with an expiry, allowlist or monthly limit: monotonic time of the next look
        self._restricted: dict[str, float] = {}
        self.grants = 0  # top-ups taken (a figure for the bench)
        self.settlements = SettlementBatch(db)

    @property
    def leases(self) -> list[Lease]:
        return list(self._leases.values())

    # ---- holds ------------------------------------------------------------------------
    async def take(self, account_id: int, key_id: str | None, amount: int) -> Lease:
        """Reserve `amount` from this process's lease on the account (topping it up from
        the account when it does not fit), or raise InsufficientCredit."""
        if amount < 0:
            raise ValueError("a hold cannot be negative")
        if key_id is not None and self._restricted \
                and self._restricted.get(key_id, 0.0) > time.monotonic():
            raise Unleased()
        key = (account_id, key_id)
        lease = self._leases.get(key)
        if lease is not None and lease.room >= amount:
            return self._hold(lease, amount)  # the hot path: no await, no SQL
        while True:
            lease = self._leases.get(key)
            if lease is None:
                lease = self._leases[key] = Lease(uuid.uuid4().hex, account_id, key_id)
            async with lease.lock:
                if lease.lost or self._leases.get(key) is not lease:
                    continue  # dropped meanwhile (a tick gave it back): take a new one
                if lease.room >= amount:
                    return self._hold(lease, amount)
                granted = await self._grant(lease, amount)
                if granted is None:  # its row vanished: start a new lease
                    continue
                return self._hold(lease, amount)

    @staticmethod
    def _hold(lease: Lease, amount: int) -> Lease:
        lease.room -= amount
        lease.holds += 1
        lease.busy = True
        return lease

    async def _grant(self, lease: Lease, amount: int) -> int | None:
        need = amount - lease.room
        want = max(self.size, amount) - lease.room  # a lease's worth, or this request's
        now = self._db.now()
        params = {"id": lease.id, "account_id": lease.account_id, "key_id": lease.key_id,
                  "owner": self.owner, "now": now,
                  "expires_at": now + timedelta(seconds=self._ttl)}
        in_db = lease.in_db

        async def grant(tx: Tx):
            if in_db and await locked_row(tx, LOCK_LEASE, params) is None:
                return "lost"
            row = await locked_row(tx, ACCOUNT_FOR_GRANT, params)
            if row is None:
                return ("account", 0, 0)
            balance, held, unfolded = row[0], row[1], int(row[2])
            limit = balance - held
            if lease.key_id is not None:
                key_row = await locked_row(tx, KEY_FOR_GRANT, params)
                if key_row is None:
                    return ("key", 0, 0)
                spend_limit, spent, key_held, expires_at, models, month_limit = key_row
                if expires_at is not None or models is not None or month_limit is not None:
                    # expiry, allowlist and monthly limit are checked per hold, in the hold
                    # row's own statement (ledger/holds.py KEY_ALLOWS): such a key is not
                    # leased, its requests take hold rows
                    return "restricted"
                if spend_limit is not None:
                    if spend_limit - spent - key_held < need:
                        return ("key", spend_limit, spent)
                    limit = min(limit, spend_limit - spent - key_held)
                # more per-key limits (a monthly one) slot in here, each shrinking `limit`
            if limit < need:
                return ("account", balance - unfolded, held - unfolded)
            # at most half of what is left, so the other processes on it get some too, but
            # always what this request needs
            grant = max(need, min(want, limit // 2))
            grant_params = {**params, "grant": grant}
            await tx.execute(GRANT_ACCOUNT, grant_params)
            if lease.key_id is not None:
                await tx.execute(GRANT_KEY, grant_params)
            await tx.execute(GROW_LEASE if in_db else NEW_LEASE, grant_params)
            return grant

        try:
            result = await self._db.run_ledger(grant, order=lease_order(lease.account_id))
        except BaseException:
            if not in_db:
                # its row may have been written unseen (a connection lost mid-commit): the
                # next try takes a new lease, and an orphan row expires and is swept
                self._leases.pop((lease.account_id, lease.key_id), None)
                lease.lost = True
            raise
        if result == "lost":
            self._lose(lease)
            return None
        if result == "restricted":
            self._restricted[lease.key_id] = time.monotonic() + RESTRICTED_RECHECK_SECONDS
            raise Unleased()
        if isinstance(result, tuple):
            kind, first, second = result
            if kind == "key":
                raise InsufficientCredit(key_limit_refusal(first, second, amount),
                                         code="key_spend_limit")
            # what this request could have had: the account's available credit and ours
            raise InsufficientCredit(account_refusal(first, second - lease.room, amount))
        lease.in_db = True
        lease.room += result
        self.grants += 1
        return result

    def settling(self, lease: Lease, hold: int, charge: int) -> None:
        """A hold's settlement was submitted: the part of its hold not charged is free again,
        and the charge is on its way to the lease's row."""
        lease.holds -= 1
        lease.room += hold - charge
        lease.inflight += charge

    def landed(self, lease_id: str | None, charge: int) -> None:
        """A settlement's charge is in the database (or will never be): no longer in flight."""
        for lease in self._leases.values():
            if lease.id == lease_id:
                lease.inflight -= charge
                return

    def find(self, lease_id: str) -> Lease | None:
        return next((lease for lease in self._leases.values() if lease.id == lease_id), None)

    def _lose(self, lease: Lease) -> None:
        log.warning("credit lease %s of account %s was swept (taken for a dead process's);"
                    " its open holds are charged to the account directly",
                    lease.id, lease.account_id)
        lease.lost = True
        lease.room = 0
        if self._leases.get((lease.account_id, lease.key_id)) is lease:
            del self._leases[(lease.account_id, lease.key_id)]

    # ---- the tick ---------------------------------------------------------------------
    async def tick(self, *, closing: bool = False) -> int:
        """Fold every lease's charges, renew it, and give back the idle ones (all of them
        when `closing`), in one group-committed transaction. Returns how many leases were
        given back; raises the first failure after all were tried."""
        results = await asyncio.gather(*(self._tick_one(lease, closing)
                                         for lease in self.leases), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return sum(results)

    async def _tick_one(self, lease: Lease, closing: bool) -> int:
        if lease.lost or lease.lock.locked():
            return 0  # a top-up in progress renews it anyway
        async with lease.lock:
            idle = lease.holds == 0 and (closing or not lease.busy)
            lease.busy = False
            if not lease.in_db:
                if idle:
                    self._leases.pop((lease.account_id, lease.key_id), None)
                    lease.lost = True
                return 0
            if idle:
                # nothing may be taken from it while it is given back (a hold arriving now
                # waits for the lock, then takes a new lease)
                lease.room = 0
            gone = await self._fold(lease, give_back=idle)
            if not gone:
                return 0
            self._leases.pop((lease.account_id, lease.key_id), None)
            lease.lost = True  # a straggling settlement of it charges the account
            return 1

    async def _fold(self, lease: Lease, *, give_back: bool) -> bool:
        """One lease's fold (and, for an idle one, the return of all it does not owe);
        returns whether its row is gone. Safe to run twice: everything is computed from
        the row, under its lock."""
        now = self._db.now()
        params = {"id": lease.id, "now": now, "month": month_of(now),
                  "expires_at": now + timedelta(seconds=self._ttl)}
        keep = lease.inflight  # read when the op runs: charges still on their way

        async def fold(tx: Tx) -> bool:
            row = await locked_row(tx, LOCK_LEASE, params)
            if row is None:
                return True
            account_id, key_id, amount, charged = row
            release = charged
            if give_back:
                release = max(charged, amount - max(keep, 0))
            if release > amount:
                raise LedgerError(f"credit lease {lease.id} would return more than it holds")
            change = {**params, "account_id": account_id, "key_id": key_id,
                      "charged": charged, "release": release}
            if release:
                await tx.execute(FOLD_ACCOUNT, change)
                if key_id is not None:
                    await tx.execute(FOLD_KEY, change)
            if give_back and release == amount:
                await tx.execute(DROP_LEASE, change)
                return True
            await tx.execute(SHRINK_LEASE, change)
            return False

        return await self._db.run_ledger(fold, order=lease_order(lease.account_id))

    async def run(self) -> None:
        """Tick forever (a lifespan task)."""
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a transient database error: the next tick retries
                log.exception("credit lease tick failed; retrying")

    async def close(self) -> None:
        """At shutdown, after the settlements drained: give every lease back."""
        try:
            await self.tick(closing=True)
        except Exception:
            log.warning("giving back credit leases at shutdown failed; they expire in %d s",
                        self._ttl, exc_info=True)
