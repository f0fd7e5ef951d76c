"""Accounts and API keys in the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

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
    expires_at: datetime | None = None
    month_limit: int | None = None
    month_spent: int = 0  # charged while `spent_month` was the key's month
    spent_month: int = 0  # YYYYMM
    models: tuple[str, ...] | None = None  # the allowlist; None: every model

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def spent_in(self, month: int) -> int:
        """What the key spent in `month` (YYYYMM, UTC): its monthly limit's count."""
        return self.month_spent if self.spent_month == month else 0


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
                  row.spent, row.held, as_utc(row.expires_at), row.month_limit,
                  row.month_spent, row.spent_month, models_of(row.models))


MAX_MODELS = 100
MAX_MODEL_ID = 128


def models_text(models) -> str | None:
    """An allowlist as stored: ",id1,id2," (see db/tables.py); None or empty: every model."""
    if models is None:
        return None
    ids = []
    for model in models:
        model = model.strip()
        if not model:
            continue
        if "," in model or len(model) > MAX_MODEL_ID or not model.isprintable():
            raise InvalidRequest(f"not a model id: {model[:40]!r}", param="models")
        if model not in ids:
            ids.append(model)
    if len(ids) > MAX_MODELS:
        raise InvalidRequest(f"at most {MAX_MODELS} models per key", param="models")
    return "," + ",".join(ids) + "," if ids else None


def models_of(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(m for m in text.split(",") if m)


def parse_models(text: str) -> list[str] | None:
    """A typed allowlist: ids separated by commas or spaces; blank means every model."""
    ids = [m for m in text.replace(",", " ").split() if m]
    return ids or None


def parse_expiry(text: str, now: datetime) -> datetime | None:
    """A typed expiry: a date YYYY-MM-DD (the key stops working when that day begins, UTC)
    or a UTC time YYYY-MM-DDTHH:MM[:SS]; blank means never. It must be after `now`."""
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), time.min, tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.removesuffix("Z"))
            moment = (moment.replace(tzinfo=UTC) if moment.tzinfo is None
                      else moment.astimezone(UTC))
    except ValueError:
        raise InvalidRequest(f"not a date: {text[:40]!r} (expected YYYY-MM-DD)",
                             param="expires_at") from None
    if moment <= now:
        raise InvalidRequest(f"the expiry {moment:%Y-%m-%d %H:%M} UTC has already passed",
                             param="expires_at")
    return moment


def _limit_value(value: int | None, param: str) -> int | None:
    if value is not None and value < 0:
        raise InvalidRequest("a spending limit must not be negative", param=param)
    return value


def _expiry_value(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("an expiry must be timezone-aware")
    # SQLAlchemy's SQLite dialect stores the wall time as given: always UTC
    return None if value is None else value.astimezone(UTC)


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
                     spend_limit: int | None = None, *, month_limit: int | None = None,
                     expires_at: datetime | None = None,
                     models: list[str] | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns it with its secret, which is never retrievable again."""
    _limit_value(spend_limit, "spend_limit")
    _limit_value(month_limit, "month_limit")
    allowed = models_text(models)
    expires_at = _expiry_value(expires_at)
    secret = new_secret()
    async with db.write() as conn:
        if await conn.scalar(select(accounts.c.id).where(accounts.c.id == account_id)) is None:
            raise NotFound(f"no account with id {account_id}", code="account_not_found")
        row = (await conn.execute(
            insert(api_keys).values(
                id=new_key_id(), account_id=account_id, name=name,
                prefix=display_prefix(secret), key_hash=hash_secret(secret),
                created_at=utcnow(), spend_limit=spend_limit, month_limit=month_limit,
                expires_at=expires_at, models=allowed,
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


async def get_key(db: Database, key_id: str, account_id: int | None = None) -> ApiKey:
    """One key; with account_id, only that account's (another's answers like an unknown)."""
    query = select(api_keys).where(api_keys.c.id == key_id)
    if account_id is not None:
        query = query.where(api_keys.c.account_id == account_id)
    async with db.read() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"no API key with id {key_id}", code="key_not_found")
    return _key(row)


UNCHANGED = ...


async def update_key(db: Database, key_id: str, account_id: int | None, *,
                     name: str | None = None,
                     spend_limit: int | None | type(...) = UNCHANGED,
                     month_limit: int | None | type(...) = UNCHANGED,
                     expires_at: datetime | None | type(...) = UNCHANGED,
                     models: list[str] | None | type(...) = UNCHANGED) -> ApiKey:
    """Change what is given (None clears a limit, an expiry, an allowlist). With
    account_id, only that account's key (the dashboard); None: any key (the CLI). The
    next hold sees the change: the conditions are read in the hold's own UPDATE."""
    values: dict = {}
    if name is not None:
        values["name"] = name
    if spend_limit is not UNCHANGED:
        values["spend_limit"] = _limit_value(spend_limit, "spend_limit")
    if month_limit is not UNCHANGED:
        values["month_limit"] = _limit_value(month_limit, "month_limit")
    if expires_at is not UNCHANGED:
        values["expires_at"] = _expiry_value(expires_at)
    if models is not UNCHANGED:
        values["models"] = models_text(models)
    where = [api_keys.c.id == key_id]
    if account_id is not None:
        where.append(api_keys.c.account_id == account_id)
    async with db.write() as conn:
        if values:
            await conn.execute(update(api_keys).where(*where).values(**values))
        row = (await conn.execute(select(api_keys).where(*where))).first()
    if row is None:
        raise NotFound(f"no API key with id {key_id}", code="key_not_found")
    return _key(row)
