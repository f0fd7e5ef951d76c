"""Redemption codes: single-use top-ups made by the operator.

Redeeming marks the code used and credits the account in ONE write transaction, the mark
being a conditional UPDATE (`WHERE used_by IS NULL`): of two accounts racing on one code,
exactly one finds the row still unused (SQLite serialises writers with BEGIN IMMEDIATE,
PostgreSQL re-checks the condition after the row lock), and the ledger entry's unique
reference (`code:<id>`) would refuse a second credit even if that ever failed.

A code is worth money to whoever holds it, so, like an API key, it is stored only as its
SHA-256 hash (80 random bits: no dictionary reaches it) with its last four characters as a
hint for the operator; the codes themselves are shown once, when they are made.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from minitoolai.clock import as_utc, utcnow
from minitoolai.dashboard.tables import redemption_codes
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.credits import add_credit_in

# Crockford-like alphabet without look-alikes (0/O, 1/I/L), 16 characters = 80 bits
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 16
MAX_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Code:
    id: int
    hint: str
    amount: int
    batch: str
    created_at: datetime
    used_by: int | None
    used_by_email: str | None
    used_at: datetime | None

    @property
    def display(self) -> str:
        return "XXXX-XXXX-XXXX-" + self.hint


def canonical(text: str) -> str:
    """What the customer typed, without case, spaces or dashes."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def display(code: str) -> str:
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def code_hash(code: str) -> str:
    return hashlib.sha256(canonical(code).encode()).hexdigest()


def new_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))


async def create_codes(db: Database, amount: int, count: int, *, batch: str = "",
                       created_by: int | None = None) -> list[str]:
    """Make `count` codes worth `amount` nanodollars each; returns them (canonical form)."""
    if amount <= 0:
        raise InvalidRequest("the amount of a code must be positive", param="amount")
    if not 1 <= count <= MAX_BATCH:
        raise InvalidRequest(f"count must be between 1 and {MAX_BATCH}", param="count")
    codes = [new_code() for _ in range(count)]
    now = utcnow()
    async with db.write() as conn:
        await conn.execute(insert(redemption_codes), [
            {"code": code_hash(c), "hint": c[-4:], "amount": amount, "batch": batch[:200],
             "created_at": now, "created_by": created_by} for c in codes])
    return codes


async def list_codes(db: Database, *, used: bool | None = None, batch: str | None = None,
                     limit: int = 500) -> list[Code]:
    query = (select(redemption_codes, accounts.c.email.label("used_by_email"))
             .outerjoin(accounts, accounts.c.id == redemption_codes.c.used_by)
             .order_by(redemption_codes.c.id.desc()).limit(limit))
    if used is True:
        query = query.where(redemption_codes.c.used_by.is_not(None))
    elif used is False:
        query = query.where(redemption_codes.c.used_by.is_(None))
    if batch:
        query = query.where(redemption_codes.c.batch == batch)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [Code(r.id, r.hint, r.amount, r.batch, as_utc(r.created_at), r.used_by,
                 r.used_by_email, as_utc(r.used_at)) for r in rows]


async def redeem(db: Database, account_id: int, text: str,
                 by: str | None = None) -> tuple[int, int]:
    """Redeem a code for this account; returns (amount credited, new balance).

    Raises InvalidRequest with one message for unknown and already-used codes alike, so the
    answer tells a guesser nothing about which codes exist.
    """
    code = canonical(text)
    refused = InvalidRequest("this code is not valid or has already been used", param="code",
                             code="invalid_code")
    if not code or len(code) > 64:
        raise refused
    async with db.write() as conn:
        row = (await conn.execute(
            update(redemption_codes)
            .where(redemption_codes.c.code == code_hash(code),
                   redemption_codes.c.used_by.is_(None))
            .values(used_by=account_id, used_at=utcnow())
            .returning(redemption_codes.c.id, redemption_codes.c.amount)
        )).first()
        if row is None:
            raise refused
        balance = await add_credit_in(conn, account_id, row.amount, kind="redeem",
                                      note=f"code …-{code[-4:]}",
                                      reference=f"code:{row.id}", by=by)
    return row.amount, balance
