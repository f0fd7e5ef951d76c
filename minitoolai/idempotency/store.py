"""Claiming an idempotency key, and keeping its first result (Stripe's semantics).

Per account, a key names one request for 24 hours. `claim` decides, in one write
transaction, what a request carrying the key does:

- the key is new (or its record is older than 24 h): it is claimed (`running`) and the
  request runs;
- the key belongs to a request with another endpoint or body: 422;
- the key's first request is still running: 409 (a claim left `running` by a process that
  died is taken over once older than the hold TTL: that request can no longer settle);
- the key's first request finished: its recorded response is answered again;
- its response was larger than the replay limit: 409 `idempotency_result_too_large` (the
  request ran and was charged once; running it again would charge it twice).

Concurrent claims of one key: SQLite serialises write transactions; on PostgreSQL the
second INSERT waits on the first's primary key and fails once it commits (then 409).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import timedelta

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.idempotency.tables import idempotency_keys

LIFETIME = timedelta(hours=24)
PURGE_EVERY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Recorded:
    status_code: int
    headers: list[tuple[str, str]]
    body: bytes


class Busy(Exception):
    """The key's first request is still running."""


class Mismatch(Exception):
    """The key was used with another endpoint or body."""


class TooLarge(Exception):
    """The key's first request finished, but its response was too large to keep."""

    def __init__(self, status_code: int | None) -> None:
        super().__init__(status_code)
        self.status_code = status_code


def fingerprint(endpoint: str, body) -> str:
    """The request as the key remembers it: the endpoint and the body's canonical JSON
    (key order and spacing do not matter, values do)."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(endpoint.encode() + b"\n" + canonical).hexdigest()


class IdempotencyStore:
    def __init__(self, db: Database, stale_seconds: float,
                 max_replay_bytes: int = 16 * 1024 * 1024) -> None:
        self._db = db
        # a response larger than this is not kept: only that it happened (state `too_large`)
        self.max_replay_bytes = max_replay_bytes
        self._stale = timedelta(seconds=stale_seconds)
        self._purged_at = float("-inf")

    async def claim(self, account_id: int, key: str, print_: str) -> Recorded | None:
        """None: claimed, run the request. A Recorded: answer it. Raises Busy or Mismatch."""
        await self._purge()
        now = utcnow()
        where = (idempotency_keys.c.account_id == account_id) & (idempotency_keys.c.key == key)
        try:
            async with self._db.write() as conn:
                query = select(idempotency_keys).where(where)
                if not self._db.is_sqlite:
                    query = query.with_for_update()
                row = (await conn.execute(query)).first()
                if row is not None and (
                        as_utc(row.created_at) < now - LIFETIME
                        or (row.state == "running"
                            and as_utc(row.created_at) < now - self._stale)):
                    await conn.execute(delete(idempotency_keys).where(where))
                    row = None
                if row is None:
                    await conn.execute(insert(idempotency_keys).values(
                        account_id=account_id, key=key, fingerprint=print_,
                        state="running", created_at=now))
                    return None
        except IntegrityError:  # another request inserted it first, and is running
            raise Busy() from None
        if row.fingerprint != print_:
            raise Mismatch()
        if row.state == "too_large":
            raise TooLarge(row.status_code)
        if row.state != "done":
            raise Busy()
        headers = [(name, value) for name, value in orjson.loads(row.headers or "[]")]
        return Recorded(row.status_code, headers, row.body or b"")

    async def record(self, account_id: int, key: str, result: Recorded) -> None:
        async with self._db.write() as conn:
            await conn.execute(update(idempotency_keys).where(
                (idempotency_keys.c.account_id == account_id) & (idempotency_keys.c.key == key)
            ).values(state="done", status_code=result.status_code,
                     headers=orjson.dumps(result.headers).decode(), body=result.body))

    async def record_too_large(self, account_id: int, key: str, status_code: int) -> None:
        """The request finished but its response is over `max_replay_bytes`: keep only that,
        so a retry is refused instead of run (and charged) again."""
        async with self._db.write() as conn:
            await conn.execute(update(idempotency_keys).where(
                (idempotency_keys.c.account_id == account_id) & (idempotency_keys.c.key == key)
            ).values(state="too_large", status_code=status_code, headers=None, body=None))

    async def release(self, account_id: int, key: str) -> None:
        """The request failed before answering: nothing to keep, a retry runs again."""
        async with self._db.write() as conn:
            await conn.execute(delete(idempotency_keys).where(
                (idempotency_keys.c.account_id == account_id) & (idempotency_keys.c.key == key)
                & (idempotency_keys.c.state == "running")))

    async def _purge(self) -> None:
        """Forget keys past their 24 h, at most once a minute per process."""
        now = time.monotonic()
        if now - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = now
        async with self._db.write() as conn:
            await conn.execute(delete(idempotency_keys).where(
                idempotency_keys.c.created_at < utcnow() - LIFETIME))
