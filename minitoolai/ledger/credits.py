"""Money in: top-ups, redemptions, operator adjustments. Each is one ledger entry."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, ledger_entries
from minitoolai.errors import InvalidRequest, NotFound
from minitoolai.money import MAX_BALANCE_NANO, MAX_CREDIT_NANO, format_usd

CREDIT_KINDS = ("topup", "adjustment", "redeem", "refund")


async def add_credit(db: Database, account_id: int, amount: int, *, kind: str = "topup",
                     note: str = "", reference: str | None = None, by: str | None = None,
                     paid: bool = False) -> int:
    """Credit (or, for an adjustment, debit) an account. Returns the new balance.

    `reference` is stored as the entry's unique request id: a payment webhook or a code
    redemption passing its own id can never be credited twice. `by` says who made the
    entry (the credit history shows it); `paid` marks credit that money was received for.
    """
    async with db.write() as conn:
        return await add_credit_in(conn, account_id, amount, kind=kind, note=note,
                                   reference=reference, by=by, paid=paid)


async def add_credit_in(conn, account_id: int, amount: int, *, kind: str = "topup",
                        note: str = "", reference: str | None = None, by: str | None = None,
                        paid: bool = False) -> int:
    if kind not in CREDIT_KINDS:
        raise ValueError(f"unknown credit kind {kind!r}")
    if amount == 0 or (amount < 0 and kind != "adjustment"):
        raise InvalidRequest("the amount must be positive", param="amount")
    if abs(amount) > MAX_CREDIT_NANO:
        raise InvalidRequest(f"the amount is over the largest accepted"
                             f" (${format_usd(MAX_CREDIT_NANO)})", param="amount")
    query = update(accounts).where(accounts.c.id == account_id,
                                   accounts.c.balance + amount <= MAX_BALANCE_NANO)
    if amount < 0:  # a debit may not take the available balance below zero
        query = query.where(accounts.c.balance - accounts.c.held >= -amount)
    result = await conn.execute(query.values(balance=accounts.c.balance + amount)
                                .returning(accounts.c.balance))
    row = result.first()
    if row is None:
        exists = await conn.scalar(select(accounts.c.id).where(accounts.c.id == account_id))
        if exists is None:
            raise NotFound(f"no account with id {account_id}", code="account_not_found")
        if amount > 0:
            raise InvalidRequest(f"the balance would pass the largest accepted"
                                 f" (${format_usd(MAX_BALANCE_NANO)})", param="amount")
        raise InvalidRequest("the adjustment would take the available balance below zero",
                             param="amount")
    # who and paid only when set: the columns' defaults say the rest, and an entry without
    # them can still be written to a database one migration behind (a rolling upgrade)
    extra = {"created_by": by[:320]} if by else {}
    if paid:
        extra["paid"] = True
    await conn.execute(insert(ledger_entries).values(
        account_id=account_id, amount=amount, kind=kind, note=note, request_id=reference,
        created_at=utcnow(), **extra,
    ))
    return row.balance
