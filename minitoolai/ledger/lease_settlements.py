"""Settling the holds served from credit leases (ledger/leases.py): one alone, or the
settlements of one moment in one statement (`SettlementBatch`).

A settlement writes the request's usage row (its unique request id makes a second
settlement of the same request do nothing), its ledger entry, and adds its charge to its
lease's row, never past the lease's amount; no account or key row is touched (the lease
book's tick folds the lease's charges into them). A settlement whose lease is gone (swept:
its process was taken for dead, and its journal replayed late) is charged to the account
directly, as a late charge (ledger/late.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tx import Tx, fail_waiters, one_statement
from minitoolai.errors import LedgerError
from minitoolai.ledger.holds import INSERT_CHARGE, INSERT_USAGE, UsageRecord

log = logging.getLogger(__name__)

LEASE_EXISTS = "SELECT 1 FROM credit_leases WHERE id = :lease_id"

# The settlement of a hold served from a lease, in one statement: the usage row (its unique
# request id makes a second settlement of the same request do nothing), the charge on the
# lease's row (never past its amount), and the ledger entry. No account or key row is
# touched: the tick folds the lease's charges into them.
SETTLE_LEASED = """
WITH u AS (INSERT INTO usage (request_id, account_id, key_id, created_at, endpoint, model,
                              prompt_tokens, completion_tokens, images, characters, cost,
                              status, estimated, latency_ms)
           VALUES (:id, :account_id, :key_id, :now, :endpoint, :model, :prompt_tokens,
                   :completion_tokens, :images, :characters, :charge, :status, :estimated,
                   CAST(:latency_ms AS INTEGER))
           ON CONFLICT (request_id) DO NOTHING RETURNING id),
l AS (UPDATE credit_leases SET charged = charged + CAST(:charge AS BIGINT)
      WHERE id = :lease_id AND charged + CAST(:charge AS BIGINT) <= amount
        AND EXISTS (SELECT 1 FROM u)
      RETURNING id),
e AS (INSERT INTO ledger_entries (account_id, amount, kind, request_id, note, created_at)
      SELECT :account_id, -CAST(:charge AS BIGINT), 'charge', :id, :note, :now
      WHERE CAST(:charge AS BIGINT) > 0 AND EXISTS (SELECT 1 FROM l)
      RETURNING id)
SELECT EXISTS (SELECT 1 FROM u), EXISTS (SELECT 1 FROM l)
"""
# SQLite has no data-modifying CTE: the same three steps as statements of their own (each a
# call into the library, no round trip), each applying only if the one before did; the
# usage row and the ledger entry are the plain settlement's (ledger/holds.py)
SQLITE_USAGE = INSERT_USAGE + " ON CONFLICT (request_id) DO NOTHING"
SQLITE_CHARGE_LEASE = ("UPDATE credit_leases SET charged = charged + :charge"
                       " WHERE id = :lease_id AND charged + :charge <= amount")
# the lease is gone (swept: its process was taken for dead): charge the account directly
LATE_ACCOUNT = "UPDATE accounts SET balance = balance - :charge WHERE id = :account_id"
LATE_KEY = "UPDATE api_keys SET spent = spent + :charge, last_used_at = :now WHERE id = :key_id"
LATE_ENTRY = ("INSERT INTO ledger_entries (account_id, amount, kind, request_id, note,"
              " created_at) VALUES (:account_id, :amount, 'charge', :id, :note, :now)")
LATE_NOTE = "late charge"

def lease_order(account_id: int) -> float:
    """A lease op's place in a group-commit batch: before the account's plain holds, so a
    batch locks a lease's row before its account's, as the sweeper does."""
    return account_id - 0.5


def settlement_params(*, lease_id: str, request_id: str, account_id: int,
                      key_id: str | None, charge: int, record: UsageRecord, now) -> dict:
    return {"id": request_id, "lease_id": lease_id, "account_id": account_id,
            "key_id": key_id, "charge": charge, "now": now,
            "note": f"{record.endpoint} {record.model}", "endpoint": record.endpoint,
            "model": record.model, "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens, "images": record.images,
            "characters": record.characters, "status": record.status,
            "estimated": record.estimated, "latency_ms": record.latency_ms}


async def settle_leased(db: Database, *, lease_id: str, request_id: str, account_id: int,
                        key_id: str | None, charge: int, record: UsageRecord) -> int | None:
    """Settle a hold served from a lease: `charge` (already capped at the hold) goes on the
    lease's row, or straight to the account if the lease was swept. Returns the charge, or
    None when the request was settled already (nothing is charged twice). (A server's
    settlements go through `SettlementBatch`, many to a statement; this is one alone.)"""
    params = settlement_params(lease_id=lease_id, request_id=request_id,
                               account_id=account_id, key_id=key_id, charge=charge,
                               record=record, now=utcnow())
    return await db.run_ledger(lambda tx: _settle_one(tx, params),
                               order=lease_order(account_id))


async def _settle_one(tx: Tx, params: dict) -> int | None:
    if tx.dialect == "postgresql":
        written, on_lease = await tx.fetchone(SETTLE_LEASED, params)
    else:
        # one dict for the three statements (SQLite binds the names each uses), its time in
        # SQLite's text once instead of by each statement (db/tx.py sqlite_params)
        params = {**params, "now": tx.stamp(params["now"]), "cost": params["charge"],
                  "amount": -params["charge"]}
        written = await tx.execute(SQLITE_USAGE, params) == 1
        on_lease = written and await tx.execute(SQLITE_CHARGE_LEASE, params) == 1
        if on_lease and params["charge"] > 0:
            await tx.execute(INSERT_CHARGE, params)
    if not written:
        return None  # settled before
    charge = params["charge"]
    if on_lease:
        return charge
    if await tx.fetchone(LEASE_EXISTS, params) is not None:
        # the lease's amount covers its holds: this is a bug, not a customer's problem
        raise LedgerError(f"settling {params['id']}: {charge} does not fit its credit"
                          f" lease {params['lease_id']}")
    if charge:
        await tx.execute(LATE_ACCOUNT, params)
        if params["key_id"] is not None:
            await tx.execute(LATE_KEY, params)
        await tx.execute(LATE_ENTRY, {**params, "amount": -charge,
                                      "note": f"{LATE_NOTE}: {params['note']}"})
        log.warning("late charge: %s settled after its credit lease %s was swept;"
                    " charged %d nanodollars to account %s directly", params["id"],
                    params["lease_id"], charge, params["account_id"])
    return charge


# Many leased settlements in one statement (SettlementBatch). Its first step locks their
# leases' rows (`live`, in id order), so that none can be swept halfway; the statement
# writes only the settlements whose lease is live, and returns the live leases: one whose
# lease is gone is settled alone afterwards, in a transaction of its own (_settle_one: a
# late charge). A lease charged past its amount fails the whole statement (its own last
# step, and the table's CHECK constraint, migration leases_0002), so nothing is left to
# check after it: alone in its batch, the statement is its own transaction (db/tx.py
# one_statement), one round trip instead of three. With several servers on one account,
# each commits its own settlements, so what a transaction costs PostgreSQL whatever it
# carries is what more servers add (bench/pg_settlement.py).
SETTLE_LEASED_MANY = """
WITH s AS (SELECT * FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:lease_ids AS VARCHAR[]),
                                CAST(:account_ids AS INTEGER[]), CAST(:key_ids AS VARCHAR[]),
                                CAST(:charges AS BIGINT[]), CAST(:endpoints AS VARCHAR[]),
                                CAST(:models AS VARCHAR[]), CAST(:prompts AS INTEGER[]),
                                CAST(:completions AS INTEGER[]), CAST(:images AS INTEGER[]),
                                CAST(:characters AS INTEGER[]), CAST(:statuses AS VARCHAR[]),
                                CAST(:estimated AS BOOLEAN[]), CAST(:latencies AS INTEGER[]),
                                CAST(:notes AS TEXT[]))
           AS s(id, lease_id, account_id, key_id, charge, endpoint, model, prompt_tokens,
                completion_tokens, images, characters, status, estimated, latency_ms, note)),
live AS (SELECT id FROM credit_leases
         WHERE id = ANY(CAST(:live_ids AS VARCHAR[])) ORDER BY id FOR UPDATE),
u AS (INSERT INTO usage (request_id, account_id, key_id, created_at, endpoint, model,
                         prompt_tokens, completion_tokens, images, characters, cost, status,
                         estimated, latency_ms)
      SELECT id, account_id, key_id, :now, endpoint, model, prompt_tokens, completion_tokens,
             images, characters, charge, status, estimated, latency_ms FROM s
      WHERE lease_id IN (SELECT id FROM live)
      ON CONFLICT (request_id) DO NOTHING RETURNING request_id),
w AS (SELECT s.* FROM s JOIN u ON u.request_id = s.id),
t AS (SELECT lease_id, CAST(sum(charge) AS BIGINT) AS total FROM w GROUP BY lease_id),
l AS (UPDATE credit_leases SET charged = credit_leases.charged + t.total FROM t
      WHERE credit_leases.id = t.lease_id
        AND credit_leases.charged + t.total <= credit_leases.amount
      RETURNING credit_leases.id),
e AS (INSERT INTO ledger_entries (account_id, amount, kind, request_id, note, created_at)
      SELECT account_id, -charge, 'charge', id, note, :now FROM w WHERE charge > 0
      RETURNING id)
SELECT (SELECT array_agg(id) FROM w), (SELECT array_agg(id) FROM live),
       -- a lease the batch does not fit fails the statement, with this message, even on a
       -- database without the CHECK constraint (a server started without migrating). SQL
       -- has no RAISE: a cast that cannot succeed, of a text that is not a constant (a
       -- constant one PostgreSQL would evaluate while planning, taken or not)
       CASE WHEN (SELECT count(*) FROM l) = (SELECT count(*) FROM t) THEN 0
            ELSE CAST('a batch of settlements would overdraw '
                      || ((SELECT count(*) FROM t) - (SELECT count(*) FROM l))
                      || ' credit lease(s)' AS INTEGER) END
"""
SWEPT = object()  # _settle_many's result for a settlement whose lease was swept
_COLUMNS = (("ids", "id"), ("lease_ids", "lease_id"), ("account_ids", "account_id"),
            ("key_ids", "key_id"), ("charges", "charge"), ("endpoints", "endpoint"),
            ("models", "model"), ("prompts", "prompt_tokens"),
            ("completions", "completion_tokens"), ("images", "images"),
            ("characters", "characters"), ("statuses", "status"),
            ("estimated", "estimated"), ("latencies", "latency_ms"), ("notes", "note"))


class SettlementBatch:
    """A server's leased settlements, many to a statement: those that arrive while the
    ledger is busy go together in the next group-committed transaction, one INSERT of
    their usage rows, one of their ledger entries, one UPDATE per lease row, instead of
    one statement each (PostgreSQL's CPU per request, measured in bench/RESULTS.md)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[dict, asyncio.Future]] = []

    async def settle(self, *, lease_id: str, request_id: str, account_id: int,
                     key_id: str | None, charge: int, record: UsageRecord) -> int | None:
        """As `settle_leased`, batched with the other settlements of this moment."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((settlement_params(
            lease_id=lease_id, request_id=request_id, account_id=account_id, key_id=key_id,
            charge=charge, record=record, now=utcnow()), future))
        if len(self._pending) == 1:
            loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batch: list | None = None

        @one_statement  # on PostgreSQL (SQLite has no round trips to save)
        async def settle_all(tx: Tx) -> list:
            nonlocal batch
            if batch is None:  # taken when the transaction runs (a rerun reuses it)
                batch, self._pending = self._pending, []
            return await _settle_many(tx, [params for params, _ in batch])

        try:
            # first in its transaction: lease rows are locked before any account's row
            results = await self._db.run_ledger(settle_all, order=-1)
        except BaseException as exc:
            if batch is None:
                batch, self._pending = self._pending, []
            fail_waiters([future for _, future in batch], exc)
            if not isinstance(exc, Exception):
                raise
            return
        swept = []
        for (params, future), result in zip(batch, results, strict=True):
            if result is SWEPT:
                swept.append((params, future))
            elif not future.done():
                future.set_result(result)
        # rare: a late charge each, alone, in order (a repeat of a request then finds it
        # settled); if this task is cancelled meanwhile, the callers still waiting get the
        # error, and journal their settlements (ledger/keeper.py)
        try:
            for params, future in swept:
                try:
                    result = await self._db.run_ledger(
                        functools.partial(_settle_one, params=params),
                        order=lease_order(params["account_id"]))
                except Exception as exc:  # noqa: BLE001 - this settlement's caller gets it
                    if not future.done():
                        future.set_exception(exc)
                else:
                    if not future.done():
                        future.set_result(result)
        except BaseException as exc:
            fail_waiters([future for _, future in swept], exc)
            raise


async def _settle_many(tx: Tx, batch: list[dict]) -> list:
    """The batch's results, in its order: a charge, None (settled before), or SWEPT (on
    PostgreSQL: not written, its lease is gone; the caller settles it alone). On
    PostgreSQL this is exactly one statement (see SETTLE_LEASED_MANY)."""
    results: dict[str, object] = {}
    unique: dict[str, dict] = {}
    for params in batch:  # the same request twice: the second finds it settled
        unique.setdefault(params["id"], params)
    if tx.dialect != "postgresql":
        # a statement per step costs no round trip on SQLite; several settlements go in one
        # call per step when they all apply (_settle_together), else one by one
        if len(unique) < 2 or not await _settle_together(tx, list(unique.values()), results):
            for params in unique.values():
                results[params["id"]] = await _settle_one(tx, params)
        return _in_order(batch, unique, results)
    settlements = list(unique.values())
    arrays = {name: [p[key] for p in settlements] for name, key in _COLUMNS}
    arrays["live_ids"] = sorted({p["lease_id"] for p in settlements})
    arrays["now"] = settlements[0]["now"]
    written, live, _ = await tx.fetchone(SETTLE_LEASED_MANY, arrays)
    written, live = set(written or ()), set(live or ())
    for p in settlements:
        if p["lease_id"] not in live:
            results[p["id"]] = SWEPT
        else:
            results[p["id"]] = p["charge"] if p["id"] in written else None
    return _in_order(batch, unique, results)


async def _settle_together(tx: Tx, settlements: list[dict], results: dict) -> bool:
    """SQLite: the batch's usage rows in one call, each lease's charges in one UPDATE, the
    ledger entries in one call (`executemany`), inside a savepoint. True when every
    settlement applied (none settled before, every lease live and not overdrawn), its
    charge then in `results`; else the savepoint is rolled back, nothing is written, and
    False tells the caller to settle them one by one (_settle_one says which is which)."""
    executemany = getattr(tx, "executemany", None)
    if executemany is None:  # a transaction the caller holds (SATx): one by one
        return False
    now = tx.stamp(settlements[0]["now"])  # one time for the batch, as on PostgreSQL
    rows = [{**p, "now": now, "cost": p["charge"], "amount": -p["charge"]}
            for p in settlements]
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["lease_id"]] = totals.get(row["lease_id"], 0) + row["charge"]
    await tx.execute("SAVEPOINT settle_many", {})
    applied = await executemany(SQLITE_USAGE, rows) == len(rows)
    for lease_id in sorted(totals) if applied else ():
        # a lease's share of the batch, added at once
        if await tx.execute(SQLITE_CHARGE_LEASE,
                            {"lease_id": lease_id, "charge": totals[lease_id]}) != 1:
            applied = False  # swept, or its total would overdraw it
            break
    if applied:
        charged = [row for row in rows if row["charge"] > 0]
        if charged:
            await executemany(INSERT_CHARGE, charged)
        for row in rows:
            results[row["id"]] = row["charge"]
    else:
        await tx.execute("ROLLBACK TO settle_many", {})
    await tx.execute("RELEASE settle_many", {})
    return applied


def _in_order(batch: list[dict], unique: dict[str, dict],
              results: dict[str, object]) -> list:
    # a request's first settlement in the batch gets its result, a repeat None; a repeat of
    # one whose lease was swept is settled alone after it too (and finds it settled)
    return [results[p["id"]] if unique[p["id"]] is p or results[p["id"]] is SWEPT else None
            for p in batch]
