"""Dashboard passwords: argon2id hashes, and logins that fail in the same time whether or not
the email exists (a dummy hash is verified when there is no account)."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from minitoolai.accounts.store import Account, get_account, normalise_email
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts
from minitoolai.errors import InvalidRequest

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


@functools.cache
def _dummy_hash() -> str:
    """Made at the first login, not at import: hashing takes argon2's 64 MiB for a moment,
    which would otherwise count in the peak memory of every server, relay-only ones too."""
    return _hasher.hash("not a password: evens out the time of unknown-email logins")


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU on purpose: keep it off the event loop
    return await asyncio.to_thread(_hasher.hash, password)


async def _verify(password_hash: str | None, password: str) -> bool:
    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False

    ok = await asyncio.to_thread(check)
    return ok and password_hash is not None


async def set_password(db: Database, account_id: int, password: str) -> None:
    digest = await hash_password(password)
    async with db.write() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == account_id)
                           .values(password_hash=digest))


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
