"""Login sessions: a random cookie value whose SHA-256 is the row's key, a CSRF token per
session, and expiry. Also the pre-login CSRF token (double-submit cookie) for the forms a
visitor sees before logging in."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, insert, select

from minitoolai.accounts.store import Account, account_columns
from minitoolai.clock import as_utc, utcnow
from minitoolai.dashboard.tables import dashboard_sessions
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts

SESSION_COOKIE = "mtai_session"
ANON_CSRF_COOKIE = "mtai_csrf"


def digest(token: str) -> str:
    """What a session row is keyed by: the cookie value's SHA-256."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class Session:
    account: Account
    csrf_token: str


async def create_session(db: Database, account_id: int, days: float) -> tuple[str, str]:
    """A new session; returns the cookie value (never stored) and its CSRF token."""
    token = new_token()
    now = utcnow()
    csrf = new_token()
    async with db.write() as conn:
        # expired rows of this account go when it logs in again: the table stays small
        await conn.execute(delete(dashboard_sessions).where(
            dashboard_sessions.c.account_id == account_id,
            dashboard_sessions.c.expires_at < now))
        await conn.execute(insert(dashboard_sessions).values(
            id_hash=digest(token), account_id=account_id, csrf_token=csrf, created_at=now,
            expires_at=now + timedelta(days=days)))
    return token, csrf


async def load_session(db: Database, token: str | None) -> Session | None:
    """The live session behind this cookie value (None: absent, unknown, expired, or the
    account was disabled)."""
    if not token or len(token) > 128:
        return None
    async with db.read() as conn:
        row = (await conn.execute(
            select(dashboard_sessions.c.csrf_token, dashboard_sessions.c.expires_at,
                   *account_columns())
            .join(accounts, accounts.c.id == dashboard_sessions.c.account_id)
            .where(dashboard_sessions.c.id_hash == digest(token))
        )).first()
    if row is None or as_utc(row.expires_at) <= utcnow() or row.disabled:
        return None
    account = Account(row.id, row.email, row.name, row.balance, row.held, bool(row.is_admin),
                      bool(row.disabled), as_utc(row.created_at))
    return Session(account, row.csrf_token)


async def end_session(db: Database, token: str | None) -> None:
    if not token:
        return
    async with db.write() as conn:
        await conn.execute(delete(dashboard_sessions)
                           .where(dashboard_sessions.c.id_hash == digest(token)))


async def purge_expired(db: Database) -> int:
    """Delete sessions past their expiry; returns how many."""
    async with db.write() as conn:
        result = await conn.execute(delete(dashboard_sessions)
                                    .where(dashboard_sessions.c.expires_at < utcnow()))
    return result.rowcount or 0


async def end_all_sessions(db: Database, account_id: int) -> None:
    """Log an account out everywhere (when an operator disables it, or its owner asks)."""
    async with db.write() as conn:
        await conn.execute(delete(dashboard_sessions)
                           .where(dashboard_sessions.c.account_id == account_id))
