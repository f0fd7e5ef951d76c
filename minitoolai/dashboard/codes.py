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
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update

from minitoolai.clock import as_utc, utcnow
from minitoolai.dashboard.tables import redemption_codes
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts
from minitoolai.errors import InvalidRequest, NotFound
from minitoolai.ledger.credits import add_credit_in
from minitoolai.money import format_usd

log = logging.getLogger(__name__)

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
    voided_at: datetime | None = None
    voided_by: str | None = None

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
                     limit: int = 500, before_id: int | None = None,
                     voided: bool | None = None) -> list[Code]:
    """Newest first, `limit` codes, older than `before_id` when paging. `used=False` means
    still redeemable: neither used nor voided."""
    query = (select(redemption_codes, accounts.c.email.label("used_by_email"))
             .outerjoin(accounts, accounts.c.id == redemption_codes.c.used_by)
             .order_by(redemption_codes.c.id.desc()).limit(limit))
    if used is True:
        query = query.where(redemption_codes.c.used_by.is_not(None))
    elif used is False:
        query = query.where(redemption_codes.c.used_by.is_(None),
                            redemption_codes.c.voided_at.is_(None))
    if voided is not None:
        query = query.where(redemption_codes.c.voided_at.is_not(None) if voided
                            else redemption_codes.c.voided_at.is_(None))
    if batch:
        query = query.where(redemption_codes.c.batch == batch)
    if before_id is not None:
        query = query.where(redemption_codes.c.id < before_id)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    return [Code(r.id, r.hint, r.amount, r.batch, as_utc(r.created_at), r.used_by,
                 r.used_by_email, as_utc(r.used_at), as_utc(r.voided_at), r.voided_by)
            for r in rows]


async def void_code(db: Database, code_id: int, by: str) -> Code:
    """Void an unused code: nobody can redeem it afterwards. The row keeps who voided it
    and when (the audit trail; a code is never deleted). Refused for a used or already
    voided code, with the reason. The conditional UPDATE races with redeem's like two
    redemptions do: exactly one of them finds the code still open."""
    async with db.write() as conn:
        changed = (await conn.execute(
            update(redemption_codes)
            .where(redemption_codes.c.id == code_id, redemption_codes.c.used_by.is_(None),
                   redemption_codes.c.voided_at.is_(None))
            .values(voided_at=utcnow(), voided_by=by[:320])
            .returning(redemption_codes.c.id))).first()
    code = next(iter(await list_codes(db, limit=1, before_id=code_id + 1)), None)
    if code is None or code.id != code_id:
        raise NotFound(f"no code with id {code_id}", code="code_not_found")
    if changed is None:
        if code.used_by is not None:
            raise InvalidRequest(f"code {code.display} was already redeemed by"
                                 f" {code.used_by_email}; it cannot be voided",
                                 code="code_used")
        raise InvalidRequest(f"code {code.display} was already voided by {code.voided_by}",
                             code="code_voided")
    log.info("redemption code %s (id %s, $%s) voided by %s", code.display, code.id,
             format_usd(code.amount), by)
    return code


async def redeem(db: Database, account_id: int, text: str,
                 by: str | None = None) -> tuple[int, int]:
    """Redeem a code for this account; returns (amount credited, new balance).

    Raises InvalidRequest with one message for unknown, used and voided codes alike, so the
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
                   redemption_codes.c.used_by.is_(None),
                   redemption_codes.c.voided_at.is_(None))
            .values(used_by=account_id, used_at=utcnow())
            .returning(redemption_codes.c.id, redemption_codes.c.amount)
        )).first()
        if row is None:
            raise refused
        balance = await add_credit_in(conn, account_id, row.amount, kind="redeem",
                                      note=f"code …-{code[-4:]}",
                                      reference=f"code:{row.id}", by=by)
    return row.amount, balance
