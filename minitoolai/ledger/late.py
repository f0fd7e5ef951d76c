"""A late charge: a journaled settlement whose hold was swept before it reached the database.

The rule (docs/operator-guide.md, "Settlements the database refused"): a request that was
served is charged, however late. Its process keeps the hold alive while the settlement is
pending, but a process that dies during a database outage stops renewing, and the sweeper
(of any process) releases the expired hold as `expired` at cost 0. When the journal is
replayed, the settlement then finds no hold; the charge is posted anyway, in one
transaction: the sweeper's usage row is rewritten with the real usage and cost, the
account's balance and the key's spending take the charge, and a `charge` ledger entry is
written with the note `late charge`. The credit the hold reserved was given back by the
sweeper and may have been spent since, so a late charge may take the available balance
below zero: the customer owes what was served, `ledger verify` reports the account until
it is topped up, and new requests get 402 meanwhile.

Only an `expired` usage row is charged late, and only once (the row's status changes with
the charge; the ledger entry's request id is unique): a settlement that reached the
database before its journal entry was replayed finds its own usage row instead, and nothing
more is charged.
"""

from __future__ import annotations

import logging

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tx import Tx
from minitoolai.ledger.journal import PendingSettlement

log = logging.getLogger(__name__)

NOTE_PREFIX = "late charge"
REWRITE_SWEPT_USAGE = (
    "UPDATE usage SET cost = :charge, status = :status, endpoint = :endpoint, model = :model,"
    " prompt_tokens = :prompt_tokens, completion_tokens = :completion_tokens,"
    " images = :images, characters = :characters, estimated = :estimated,"
    " latency_ms = :latency_ms WHERE request_id = :id AND status = 'expired'"
    " RETURNING account_id, key_id")
DEBIT_ACCOUNT = "UPDATE accounts SET balance = balance - :charge WHERE id = :account_id"
DEBIT_KEY = ("UPDATE api_keys SET spent = spent + :charge, month_spent = month_spent + :charge"
             " WHERE id = :key_id")
INSERT_LATE_CHARGE = ("INSERT INTO ledger_entries (account_id, amount, kind, request_id, note,"
                      " created_at) VALUES (:account_id, :amount, 'charge', :id, :note, :now)")


async def post_late_charge(db: Database, entry: PendingSettlement) -> int | None:
    """Charge a settlement whose hold was swept; returns the charge, or None when there
    is nothing to charge late (the settlement was made already)."""
    record = entry.record
    charge = max(0, entry.cost)
    if not charge:
        return None

    async def late(tx: Tx) -> tuple[int, str | None] | None:
        params = {"id": entry.request_id, "charge": charge, "status": record.status,
                  "endpoint": record.endpoint, "model": record.model,
                  "prompt_tokens": record.prompt_tokens,
                  "completion_tokens": record.completion_tokens, "images": record.images,
                  "characters": record.characters, "estimated": record.estimated,
                  "latency_ms": record.latency_ms}
        row = await tx.fetchone(REWRITE_SWEPT_USAGE, params)
        if row is None:
            return None
        account_id, key_id = row[0], row[1]
        await tx.execute(DEBIT_ACCOUNT, {"charge": charge, "account_id": account_id})
        if key_id is not None:
            await tx.execute(DEBIT_KEY, {"charge": charge, "key_id": key_id})
        await tx.execute(INSERT_LATE_CHARGE, {
            "account_id": account_id, "amount": -charge, "id": entry.request_id,
            "note": f"{NOTE_PREFIX}: {record.endpoint} {record.model}",
            "now": tx.stamp(utcnow())})
        return account_id, key_id

    posted = await db.run_ledger(late, order=entry.account_id)
    if posted is None:
        return None
    log.warning("late charge: %s was served, its hold expired and was released before its"
                " settlement reached the database; charged %d nanodollars to account %s now",
                entry.request_id, charge, posted[0])
    return charge
