"""Password resets by a one-time link: `/reset/<token>`, sent by email (mail.py) or printed
by `minitoolai accounts reset-link EMAIL`.

The token is 256 random bits; only its SHA-256 is stored, so a leaked database cannot be
used to reset anyone's password. A link works once (its row's used_at is set by a
conditional UPDATE in the same transaction as the new password), until its expiry on the
database's clock (Database.now: several servers agree on when it ran out), and no more
after any change of the account's password (passwords.set_password deletes the rows).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import and_, delete, insert, or_, select, update

from minitoolai import mail
from minitoolai.accounts.store import Account, get_account
from minitoolai.dashboard.passwords import hash_password
from minitoolai.dashboard.tables import dashboard_sessions, password_resets
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts

RESET_PATH = "/reset/"
MAX_TOKEN_LENGTH = 128  # a longer path segment is no token of ours: refused unread


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def reset_url(base_url: str, token: str) -> str:
    return base_url.rstrip("/") + RESET_PATH + token


async def create_reset(db: Database, account_id: int, minutes: int) -> str:
    """A new reset token for the account (returned once, never stored in clear). Older
    links of the account keep working until they expire or one of them is used."""
    token = secrets.token_urlsafe(32)
    now = db.now()
    async with db.write() as conn:
        # spent and expired rows of this account go now: the table stays small
        await conn.execute(delete(password_resets).where(
            password_resets.c.account_id == account_id,
            or_(password_resets.c.used_at.is_not(None), password_resets.c.expires_at <= now)))
        await conn.execute(insert(password_resets).values(
            token_hash=_digest(token), account_id=account_id, created_at=now,
            expires_at=now + timedelta(minutes=minutes)))
    return token


def _live(token: str, now):
    return and_(password_resets.c.token_hash == _digest(token),
                password_resets.c.used_at.is_(None), password_resets.c.expires_at > now)


async def find_reset(db: Database, token: str) -> Account | None:
    """The account a live token resets (None: unknown, used, expired, or the account is
    disabled)."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    async with db.read() as conn:
        account_id = await conn.scalar(
            select(password_resets.c.account_id)
            .join(accounts, accounts.c.id == password_resets.c.account_id)
            .where(_live(token, db.now()), accounts.c.disabled.is_(False)))
    return None if account_id is None else await get_account(db, account_id)


async def use_reset(db: Database, token: str, password: str) -> Account | None:
    """Set the account's password through a live token and spend the token, in one
    transaction: of two uses at once, one wins and the other gets None. Every session of
    the account ends and its other reset links die with the old password."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    digest = await hash_password(password)  # before the transaction: it takes a while
    async with db.write() as conn:
        now = db.now()
        account_id = await conn.scalar(
            select(password_resets.c.account_id)
            .join(accounts, accounts.c.id == password_resets.c.account_id)
            .where(_live(token, now), accounts.c.disabled.is_(False)))
        if account_id is None:
            return None
        spent = await conn.execute(update(password_resets).where(_live(token, now))
                                   .values(used_at=now))
        if spent.rowcount != 1:
            return None
        await conn.execute(update(accounts).where(accounts.c.id == account_id)
                           .values(password_hash=digest))
        await conn.execute(delete(dashboard_sessions)
                           .where(dashboard_sessions.c.account_id == account_id))
        await conn.execute(delete(password_resets).where(
            password_resets.c.account_id == account_id,
            password_resets.c.token_hash != _digest(token)))
    return await get_account(db, account_id)


def reset_email(url: str, minutes: int) -> tuple[str, str]:
    """(subject, body) of the email that carries a reset link."""
    body = ("Someone (we hope you) asked to reset the password of your MiniToolAI account.\n\n"
            f"Choose a new password here:\n\n{url}\n\n"
            f"The link works once, within {minutes} minutes. If you did not ask for it,\n"
            "ignore this email: your password stays as it is.\n")
    return "Reset your MiniToolAI password", body


async def request_reset(db: Database, smtp: mail.SmtpSettings, base_url: str, email: str,
                        minutes: int) -> bool:
    """Email a reset link to the account with this address, if there is one and it is not
    disabled; returns whether one was sent. The caller runs this in the background and
    answers the same either way (no account enumeration)."""
    async with db.read() as conn:
        account_id = await conn.scalar(select(accounts.c.id).where(
            accounts.c.email == email, accounts.c.disabled.is_(False)))
    if account_id is None:
        return False
    token = await create_reset(db, account_id, minutes)
    subject, body = reset_email(reset_url(base_url, token), minutes)
    await mail.send(smtp, email, subject, body)
    return True
