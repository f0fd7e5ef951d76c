"""Accounts and API keys in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, cast, func, insert, select, update

from minitoolai.accounts.keys import display_prefix, hash_secret, new_key_id, new_secret
from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, api_keys, credit_leases
from minitoolai.errors import InvalidRequest, NotFound


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    email: str
    name: str
    balance: int
    held: int
    is_admin: bool
    disabled: bool
    created_at: datetime

    @property
    def available(self) -> int:
        return self.balance - self.held


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    account_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    spend_limit: int | None
    spent: int
    held: int


def account_columns() -> list:
    """The accounts table's columns, with balance and held as the customer sees them: the
    charges a server's credit lease made and has not folded into the row yet (at most a
    lease tick ago, ledger/leases.py) already taken from both. Available credit (balance
    - held) is the same either way."""
    # sum() of a BIGINT is NUMERIC on PostgreSQL: cast back, money stays int
    unfolded = cast(select(func.coalesce(func.sum(credit_leases.c.charged), 0))
                    .where(credit_leases.c.account_id == accounts.c.id).scalar_subquery(),
                    BigInteger)
    return [*(c for c in accounts.c if c.name not in ("balance", "held")),
            (accounts.c.balance - unfolded).label("balance"),
            (accounts.c.held - unfolded).label("held")]


def _account(row) -> Account:
    return Account(row.id, row.email, row.name, row.balance, row.held, bool(row.is_admin),
                   bool(row.disabled), as_utc(row.created_at))


def _key(row) -> ApiKey:
    return ApiKey(row.id, row.account_id, row.name, row.prefix, as_utc(row.created_at),
                  as_utc(row.last_used_at), as_utc(row.revoked_at), row.spend_limit,
                  row.spent, row.held)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email:
        raise InvalidRequest(f"not a valid email address: {email!r}", param="email")
    return email


async def create_account(db: Database, email: str, name: str = "") -> Account:
    email = normalise_email(email)
    async with db.write() as conn:
        exists = await conn.scalar(select(accounts.c.id).where(accounts.c.email == email))
        if exists is not None:
            raise InvalidRequest(f"an account with email {email} already exists", param="email",
                                 code="account_exists")
        row = (await conn.execute(
            insert(accounts).values(email=email, name=name, created_at=utcnow())
            .returning(*accounts.c)
        )).one()
    return _account(row)


async def get_account(db: Database, account_id: int) -> Account:
    async with db.read() as conn:
        row = (await conn.execute(select(*account_columns())
                                   .where(accounts.c.id == account_id))).first()
    if row is None:
        raise NotFound(f"no account with id {account_id}", code="account_not_found")
    return _account(row)


async def find_account(db: Database, email: str) -> Account:
    email = email.strip().lower()
    async with db.read() as conn:
        row = (await conn.execute(select(*account_columns())
                                   .where(accounts.c.email == email))).first()
    if row is None:
        raise NotFound(f"no account with email {email}", code="account_not_found")
    return _account(row)


async def list_accounts(db: Database, search: str | None = None, limit: int = 1000) -> list[Account]:
    query = select(*account_columns()).order_by(accounts.c.id).limit(limit)
    if search:
        pattern = f"%{search.lower()}%"
        query = query.where(func.lower(accounts.c.email).like(pattern)
                            | func.lower(accounts.c.name).like(pattern))
    async with db.read() as conn:
        return [_account(r) for r in (await conn.execute(query)).all()]


async def set_account_flags(db: Database, account_id: int, *, is_admin: bool | None = None,
                            disabled: bool | None = None) -> None:
    values = {}
    if is_admin is not None:
        values["is_admin"] = is_admin
    if disabled is not None:
        values["disabled"] = disabled
    if not values:
        return
    async with db.write() as conn:
        result = await conn.execute(update(accounts).where(accounts.c.id == account_id)
                                    .values(**values))
    if result.rowcount == 0:
        raise NotFound(f"no account with id {account_id}", code="account_not_found")


async def create_key(db: Database, account_id: int, name: str = "",
                     spend_limit: int | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns it with its secret, which is never retrievable again."""
    if spend_limit is not None and spend_limit < 0:
        raise InvalidRequest("spend limit must not be negative", param="spend_limit")
    secret = new_secret()
    async with db.write() as conn:
        if await conn.scalar(select(accounts.c.id).where(accounts.c.id == account_id)) is None:
            raise NotFound(f"no account with id {account_id}", code="account_not_found")
        row = (await conn.execute(
            insert(api_keys).values(
                id=new_key_id(), account_id=account_id, name=name,
                prefix=display_prefix(secret), key_hash=hash_secret(secret),
                created_at=utcnow(), spend_limit=spend_limit,
            ).returning(*api_keys.c)
        )).one()
    return _key(row), secret


async def list_keys(db: Database, account_id: int) -> list[ApiKey]:
    async with db.read() as conn:
        rows = (await conn.execute(select(api_keys).where(api_keys.c.account_id == account_id)
                                   .order_by(api_keys.c.created_at))).all()
    return [_key(r) for r in rows]


async def revoke_key(db: Database, key_id: str, account_id: int | None = None) -> ApiKey:
    """Revoke a key (idempotent). With account_id, only that account's key may be revoked."""
    query = update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    async with db.write() as conn:
        await conn.execute(query.values(revoked_at=utcnow()))
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
    if row is None or (account_id is not None and row.account_id != account_id):
        raise NotFound(f"no API key with id {key_id}", code="key_not_found")
    return _key(row)


async def update_key(db: Database, key_id: str, account_id: int, *, name: str | None = None,
                     spend_limit: int | None | type(...) = ...) -> ApiKey:
    values: dict = {}
    if name is not None:
        values["name"] = name
    if spend_limit is not ...:
        if spend_limit is not None and spend_limit < 0:
            raise InvalidRequest("spend limit must not be negative", param="spend_limit")
        values["spend_limit"] = spend_limit
    async with db.write() as conn:
        if values:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id,
                                                      api_keys.c.account_id == account_id)
                               .values(**values))
        row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id,
                                                         api_keys.c.account_id == account_id))
               ).first()
    if row is None:
        raise NotFound(f"no API key with id {key_id}", code="key_not_found")
    return _key(row)
