"""Reserve before work, settle after: each one short transaction, never open across I/O.

reserve: raise `held` only where `balance - held` covers the hold (and, for a key with a
spending limit, where `spent + held` stays under it), and insert the hold row, together.
settle: delete the hold row (only the first settle finds it, so settling twice charges
once), charge the cost (never more than the hold), release the rest, and write the ledger
entry and the usage record, together. release: settle with a cost of zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, insert, select, update

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, api_keys, holds, ledger_entries, usage
from minitoolai.errors import InsufficientCredit
from minitoolai.money import format_usd


@dataclass(slots=True)
class UsageRecord:
    """What one request used; written with its settlement."""

    endpoint: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    characters: int = 0
    status: str = "ok"  # ok | error | cancelled
    estimated: bool = False
    latency_ms: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    account_id: int
    key_id: str | None
    amount: int




async def reserve(
    db: Database,
    *,
    request_id: str,
    account_id: int,
    key_id: str | None,
    amount: int,
    kind: str,
    ttl_seconds: int,
) -> Hold:
    """Hold `amount` nanodollars of the account's credit, or raise InsufficientCredit (402)."""
    if amount < 0:
        raise ValueError("a hold cannot be negative")
    now = utcnow()
    async with db.write() as conn:
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.id == account_id,
                   accounts.c.balance - accounts.c.held >= amount)
            .values(held=accounts.c.held + amount)
        )
        if result.rowcount != 1:
            row = (await conn.execute(select(accounts.c.balance, accounts.c.held)
                                      .where(accounts.c.id == account_id))).first()
            available = (row.balance - row.held) if row else 0
            raise InsufficientCredit(
                f"insufficient credit: available balance ${format_usd(available)}"
                f" (balance ${format_usd(row.balance if row else 0)}, held"
                f" ${format_usd(row.held if row else 0)}), this request needs a hold of"
                f" ${format_usd(amount)}. Top up your credit to continue."
            )
        if key_id is not None:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id,
                       (api_keys.c.spend_limit.is_(None))
                       | (api_keys.c.spent + api_keys.c.held + amount <= api_keys.c.spend_limit))
                .values(held=api_keys.c.held + amount)
            )
            if result.rowcount != 1:
                row = (await conn.execute(select(api_keys.c.spend_limit, api_keys.c.spent)
                                          .where(api_keys.c.id == key_id))).first()
                limit = row.spend_limit if row and row.spend_limit is not None else 0
                raise InsufficientCredit(
                    f"this API key's spending limit of ${format_usd(limit)} would be exceeded"
                    f" (spent ${format_usd(row.spent if row else 0)}, this request needs a hold"
                    f" of ${format_usd(amount)})",
                    code="key_spend_limit",
                )
        await conn.execute(insert(holds).values(
            id=request_id, account_id=account_id, key_id=key_id, amount=amount, kind=kind,
            created_at=now, expires_at=now + timedelta(seconds=ttl_seconds),
        ))
    return Hold(request_id, account_id, key_id, amount)


async def settle(db: Database, request_id: str, cost: int, record: UsageRecord) -> int | None:
    """Charge `cost` (capped at the hold) and release the rest. Returns the amount charged,
    or None when the hold was already settled or swept (nothing is charged twice)."""
    async with db.write() as conn:
        return await settle_in(conn, request_id, cost, record)


async def settle_in(conn, request_id: str, cost: int, record: UsageRecord) -> int | None:
    """`settle` inside a transaction the caller holds (an image job's change of state)."""
    now = utcnow()
    row = (await conn.execute(
        delete(holds).where(holds.c.id == request_id)
        .returning(holds.c.account_id, holds.c.key_id, holds.c.amount)
    )).first()
    if row is None:
        return None
    charge = max(0, min(cost, row.amount))
    await conn.execute(
        update(accounts).where(accounts.c.id == row.account_id)
        .values(balance=accounts.c.balance - charge, held=accounts.c.held - row.amount)
    )
    if row.key_id is not None:
        await conn.execute(
            update(api_keys).where(api_keys.c.id == row.key_id)
            .values(held=api_keys.c.held - row.amount, spent=api_keys.c.spent + charge,
                    last_used_at=now)
        )
    if charge:
        await conn.execute(insert(ledger_entries).values(
            account_id=row.account_id, amount=-charge, kind="charge", request_id=request_id,
            note=f"{record.endpoint} {record.model}", created_at=now,
        ))
    await conn.execute(insert(usage).values(
        request_id=request_id, account_id=row.account_id, key_id=row.key_id, created_at=now,
        endpoint=record.endpoint, model=record.model, prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens, images=record.images,
        characters=record.characters, cost=charge, status=record.status,
        estimated=record.estimated, latency_ms=record.latency_ms,
    ))
    return charge


async def release(db: Database, request_id: str, record: UsageRecord) -> int | None:
    """Give the whole hold back (the work failed); the usage record keeps the failure."""
    return await settle(db, request_id, 0, record)
