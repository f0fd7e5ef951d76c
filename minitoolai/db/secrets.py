"""The signing secret, shared through the database by every server that uses it.

When `secret_key` is not configured, the first server to start on a database stores one
there and every other server (another machine, a restart) reads the same: image tickets
and file URLs signed by one are honoured by all. A server that already had a generated
secret in its data directory (`data_dir/secret_key`, the single-machine default of earlier
versions) offers that one, so the tickets it issued stay valid. The first write wins
(INSERT ... ON CONFLICT DO NOTHING, then read), however many start together.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import text

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database

SIGNING_KEY = "signing_key"
_OFFER = ("INSERT INTO server_secrets (name, value, created_at) VALUES (:name, :value, :now)"
          " ON CONFLICT (name) DO NOTHING")
_READ = "SELECT value FROM server_secrets WHERE name = :name"


def _local_secret(data_dir: Path) -> str | None:
    path = data_dir / "secret_key"
    try:
        value = path.read_text().strip()
    except OSError:
        return None
    return value if len(value) >= 16 else None


async def shared_signing_key(db: Database, data_dir: Path) -> str:
    """The database's signing secret, stored on first use."""
    offer = _local_secret(data_dir) or secrets.token_urlsafe(48)
    async with db.write() as conn:
        await conn.execute(text(_OFFER), {"name": SIGNING_KEY, "value": offer, "now": utcnow()})
        return (await conn.execute(text(_READ), {"name": SIGNING_KEY})).scalar_one()
