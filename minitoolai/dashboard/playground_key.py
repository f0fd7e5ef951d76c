"""The playground's API key: one per account, made on first use, so playground calls are
reserved, limited, charged and listed exactly like any API call with a key."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from minitoolai.accounts.auth import Principal
from minitoolai.accounts.store import create_key
from minitoolai.dashboard.tables import playground_keys
from minitoolai.db.engine import Database
from minitoolai.db.tables import api_keys

KEY_NAME = "playground"


async def playground_key_id(db: Database, account_id: int) -> str | None:
    async with db.read() as conn:
        return await conn.scalar(select(playground_keys.c.key_id)
                                 .where(playground_keys.c.account_id == account_id))


async def playground_principal(db: Database, account_id: int) -> Principal:
    """The Principal of this account's live playground key, creating one when there is none
    or the customer revoked it (its secret is dropped: the playground never needs it)."""
    async with db.read() as conn:
        row = (await conn.execute(
            select(api_keys.c.id, api_keys.c.revoked_at)
            .join(playground_keys, playground_keys.c.key_id == api_keys.c.id)
            .where(playground_keys.c.account_id == account_id,
                   api_keys.c.account_id == account_id))).first()
    if row is not None and row.revoked_at is None:
        return Principal(row.id, account_id)
    key, _secret = await create_key(db, account_id, KEY_NAME)
    async with db.write() as conn:
        await conn.execute(delete(playground_keys)
                           .where(playground_keys.c.account_id == account_id))
        await conn.execute(insert(playground_keys).values(account_id=account_id,
                                                          key_id=key.id))
    return Principal(key.id, account_id)
