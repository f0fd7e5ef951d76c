"""The credit history: an account's ledger entries as people read them (CLI, admin page, CSV),
and the platform's money in, paid revenue apart from free credit."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select

from minitoolai.clock import as_utc
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from minitoolai.money import format_usd

CSV_COLUMNS = ("id", "time_utc", "kind", "amount_usd", "amount_nano", "paid", "created_by",
               "note", "reference")
# a spreadsheet runs a cell that starts with one of these as a formula: notes are free text
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Entry:
    id: int
    created_at: datetime
    kind: str  # topup | adjustment | redeem | refund | charge
    amount: int  # signed nanodollars: + credit, - debit
    note: str
    created_by: str | None
    paid: bool
    reference: str | None  # a charge's request id, a Stripe/code/sign-up reference

    def as_json(self) -> dict:
        """Exact amounts: the decimal USD string and the integer nanodollars."""
        return {"id": self.id, "created_at": self.created_at.isoformat(), "kind": self.kind,
                "amount": format_usd(self.amount), "amount_nano": self.amount,
                "note": self.note, "created_by": self.created_by, "paid": self.paid,
                "reference": self.reference}


def _where(account_id: int, since: datetime | None, credits_only: bool) -> list:
    where = [ledger_entries.c.account_id == account_id]
    if since is not None:
        where.append(ledger_entries.c.created_at >= since)
    if credits_only:
        where.append(ledger_entries.c.kind != "charge")
    return where


async def list_entries(db: Database, account_id: int, *, since: datetime | None = None,
                       credits_only: bool = False, limit: int | None = None,
                       before_id: int | None = None) -> list[Entry]:
    """Newest first. `credits_only` leaves out per-request charges (the usage table has
    those); `before_id` pages back from an entry."""
    where = _where(account_id, since, credits_only)
    if before_id is not None:
        where.append(ledger_entries.c.id < before_id)
    query = select(ledger_entries).where(*where).order_by(ledger_entries.c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [Entry(r.id, as_utc(r.created_at), r.kind, int(r.amount), r.note, r.created_by,
                  bool(r.paid), r.request_id) for r in rows]


async def count_entries(db: Database, account_id: int, *, since: datetime | None = None,
                        credits_only: bool = False) -> tuple[int, int]:
    """How many entries match, and their signed sum."""
    query = (select(func.count(), func.coalesce(func.sum(ledger_entries.c.amount), 0))
             .where(*_where(account_id, since, credits_only)))
    async with db.read() as conn:
        count, total = (await conn.execute(query)).one()
    return int(count), int(total)


def spreadsheet_safe(text: str) -> str:
    """A free-text cell a spreadsheet will not run as a formula (CSV injection)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def entries_csv(entries: list[Entry], header: bool = True) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow([e.id, e.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), e.kind,
                         format_usd(e.amount), e.amount, "yes" if e.paid else "no",
                         spreadsheet_safe(e.created_by or ""), spreadsheet_safe(e.note),
                         e.reference or ""])
    return out.getvalue()


async def money_in(db: Database) -> dict[str, int]:
    """All-time credit across accounts: `paid` (money received: Stripe, operator top-ups
    marked paid), `free` (demo, sign-up, codes, unpaid top-ups), `adjustments` (signed net of
    operator adjustments and refunds)."""
    paid = ledger_entries.c.paid.is_(True)
    kind = ledger_entries.c.kind
    bucket = case((paid, "paid"), (kind.in_(("topup", "redeem")), "free"),
                  else_="adjustments")
    query = (select(bucket, func.sum(ledger_entries.c.amount))
             .where(kind != "charge").group_by(bucket))
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    totals = {"paid": 0, "free": 0, "adjustments": 0}
    for name, total in rows:
        totals[name] += int(total or 0)
    return totals
