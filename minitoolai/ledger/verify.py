"""`ledger verify`: the invariants that must hold at every committed instant.

Per account: balance = sum of its ledger entries + what its credit leases charged and did
not fold yet; held = sum of its open holds + its leases' amounts; balance - held >= 0
(nothing was ever served without its hold; a late charge can break this, see
ledger/late.py). Per key: held = sum of its open holds + its leases' amounts; spent + its
leases' unfolded charges = sum of its usage costs; its month's spending within 0 and spent.
Per lease: 0 <= charged <= amount (ledger/leases.py). Every charge entry has a usage record
with the same cost, and every usage record with a cost has its charge entry. And, given the
settlement journal's directory, no
journaled settlement is still waiting for the database (served, not yet charged).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, api_keys, credit_leases, holds, ledger_entries, usage
from minitoolai.ledger.journal import pending_in
from minitoolai.money import format_usd


async def verify(db: Database, journal_dir: Path | None = None) -> list[str]:
    """Return one line per broken invariant (empty when the ledger is sound)."""
    problems: list[str] = []
    if journal_dir is not None:
        for path, entries in pending_in(journal_dir).items():
            shown = ", ".join(entry.request_id for entry in entries[:5])
            more = f" and {len(entries) - 5} more" if len(entries) > 5 else ""
            problems.append(
                f"settlement journal {path}: {len(entries)} settlement(s) of"
                f" ${format_usd(sum(entry.cost for entry in entries))} not yet in the"
                f" database ({shown}{more}); the server retries them, or replays them at"
                " its next start")
    async with db.read() as conn:
        if not db.is_sqlite:
            # one snapshot for every query below: under traffic, READ COMMITTED would let
            # each query see a different moment and report mismatches that never existed
            await conn.execution_options(isolation_level="REPEATABLE READ")
            await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        ledger_sum = dict((await conn.execute(
            select(ledger_entries.c.account_id, func.sum(ledger_entries.c.amount))
            .group_by(ledger_entries.c.account_id))).all())
        hold_sum = dict((await conn.execute(
            select(holds.c.account_id, func.sum(holds.c.amount))
            .group_by(holds.c.account_id))).all())
        lease_amount, lease_charged = _sums(await conn.execute(
            select(credit_leases.c.account_id, func.sum(credit_leases.c.amount),
                   func.sum(credit_leases.c.charged)).group_by(credit_leases.c.account_id)))
        key_lease_amount, key_lease_charged = _sums(await conn.execute(
            select(credit_leases.c.key_id, func.sum(credit_leases.c.amount),
                   func.sum(credit_leases.c.charged))
            .where(credit_leases.c.key_id.is_not(None)).group_by(credit_leases.c.key_id)))
        for lease in (await conn.execute(select(credit_leases.c.id, credit_leases.c.amount,
                                                credit_leases.c.charged))).all():
            if not 0 <= lease.charged <= lease.amount:
                problems.append(f"credit lease {lease.id}: charged {lease.charged} is outside"
                                f" its amount {lease.amount}")
        for row in (await conn.execute(select(accounts.c.id, accounts.c.email,
                                              accounts.c.balance, accounts.c.held))).all():
            expected_balance = (int(ledger_sum.get(row.id) or 0)
                                + lease_charged.get(row.id, 0))
            expected_held = int(hold_sum.get(row.id) or 0) + lease_amount.get(row.id, 0)
            if row.balance != expected_balance:
                problems.append(f"account {row.id} ({row.email}): balance"
                                f" {format_usd(row.balance)} != ledger sum"
                                f" {format_usd(expected_balance)}")
            if row.held != expected_held:
                problems.append(f"account {row.id} ({row.email}): held {format_usd(row.held)}"
                                f" != open holds {format_usd(expected_held)}")
            if row.balance - row.held < 0 or row.held < 0:
                problems.append(f"account {row.id} ({row.email}): negative available balance"
                                f" {format_usd(row.balance - row.held)}")
        key_holds = dict((await conn.execute(
            select(holds.c.key_id, func.sum(holds.c.amount)).where(holds.c.key_id.is_not(None))
            .group_by(holds.c.key_id))).all())
        key_spent = dict((await conn.execute(
            select(usage.c.key_id, func.sum(usage.c.cost)).where(usage.c.key_id.is_not(None))
            .group_by(usage.c.key_id))).all())
        for row in (await conn.execute(select(api_keys.c.id, api_keys.c.held,
                                              api_keys.c.spent,
                                              api_keys.c.month_spent))).all():
            if not 0 <= row.month_spent <= row.spent:
                problems.append(f"key {row.id}: spent this month {row.month_spent} is not"
                                f" within 0 and its total {row.spent}")
            expected_held = int(key_holds.get(row.id) or 0) + key_lease_amount.get(row.id, 0)
            if row.held != expected_held:
                problems.append(f"key {row.id}: held {row.held} != open holds and leases"
                                f" {expected_held}")
            expected_spent = int(key_spent.get(row.id) or 0) - key_lease_charged.get(row.id, 0)
            if row.spent != expected_spent:
                problems.append(f"key {row.id}: spent {row.spent} != usage costs not on a"
                                f" lease {expected_spent}")
        mismatched = (await conn.execute(
            select(ledger_entries.c.request_id, ledger_entries.c.amount, usage.c.cost)
            .select_from(ledger_entries.outerjoin(
                usage, usage.c.request_id == ledger_entries.c.request_id))
            .where(ledger_entries.c.kind == "charge")
            .where((usage.c.cost.is_(None)) | (usage.c.cost != -ledger_entries.c.amount))
        )).all()
        for row in mismatched:
            problems.append(f"charge {row.request_id}: ledger {-row.amount} != usage cost"
                            f" {row.cost}")
        uncharged = (await conn.execute(
            select(usage.c.request_id, usage.c.cost)
            .select_from(usage.outerjoin(
                ledger_entries, ledger_entries.c.request_id == usage.c.request_id))
            .where(usage.c.cost > 0, ledger_entries.c.id.is_(None)))).all()
        for row in uncharged:
            problems.append(f"usage {row.request_id}: cost {row.cost} has no charge in the"
                            " ledger")
    return problems


def _sums(result) -> tuple[dict, dict]:
    """(id: sum of amounts, id: sum of charges) from rows of (id, amount, charged)."""
    amounts, charged = {}, {}
    for owner, amount, charge in result.all():
        amounts[owner], charged[owner] = int(amount or 0), int(charge or 0)
    return amounts, charged
