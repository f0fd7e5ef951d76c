"""Dashboard passwords: argon2id hashes, and logins that fail in the same time whether or not
the email exists (a dummy hash is verified when there is no account)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update

from minitoolai.accounts.store import Account, get_account, normalise_email
from minitoolai.dashboard.sessions import digest as session_digest
from minitoolai.dashboard.tables import dashboard_sessions, password_resets
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts
from minitoolai.errors import InvalidRequest

MAX_PASSWORD = 1024  # argon2 takes any length; this only bounds the work per attempt
_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY_HASH = _hasher.hash("not a password: evens out the time of unknown-email logins")


def new_password_problem(password: str, again: str, minimum: int) -> tuple[str, str] | None:
    """What is wrong with a new password, as (form field, message), or None. The one rule
    of sign-up, password change and reset."""
    if len(password) < minimum:
        return "password", f"Choose a password of at least {minimum} characters."
    if len(password) > MAX_PASSWORD:
        return "password", f"Choose a password of at most {MAX_PASSWORD} characters."
    if password != again:
        return "password2", "The two passwords differ."
    return None


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU on purpose: keep it off the event loop
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return False

    ok = await asyncio.to_thread(check)
    return ok and password_hash is not None


async def set_password(db: Database, account_id: int, password: str, *,
                       end_sessions: bool = False, keep_session: str | None = None) -> None:
    """Set the account's password. Its pending reset links die with the old password;
    with `end_sessions`, so do its login sessions, all but the one whose cookie value is
    `keep_session` (the person who changed it stays logged in)."""
    digest = await hash_password(password)
    async with db.write() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == account_id)
                           .values(password_hash=digest))
        await conn.execute(delete(password_resets)
                           .where(password_resets.c.account_id == account_id))
        if end_sessions:
            ended = delete(dashboard_sessions).where(dashboard_sessions.c.account_id == account_id)
            if keep_session:
                ended = ended.where(dashboard_sessions.c.id_hash != session_digest(keep_session))
            await conn.execute(ended)


async def password_matches(db: Database, account_id: int, password: str) -> bool:
    """Whether this is the account's current password (the password-change form asks)."""
    async with db.read() as conn:
        stored = await conn.scalar(select(accounts.c.password_hash)
                                   .where(accounts.c.id == account_id))
    return await _verify(stored, password)


async def check_login(db: Database, email: str, password: str) -> Account | None:
    """The account these credentials open, or None (unknown email, wrong password, no
    password set). Disabled accounts are returned; the caller refuses them by name."""
    try:
        email = normalise_email(email)
    except InvalidRequest:  # a malformed email is just a failed login
        email = ""
    async with db.read() as conn:
        row = (await conn.execute(select(accounts.c.id, accounts.c.password_hash)
                                  .where(accounts.c.email == email))).first()
    ok = await _verify(row.password_hash if row else None, password)
    if not ok or row is None:
        return None
    return await get_account(db, row.id)
