"""Bearer-key authentication, with a short in-process cache so the hot path skips a query.

The cache trusts a lookup for `auth_cache_seconds` (default 2 s). Revoking a key or
disabling an account evicts it from this process at once and, with Redis, from every process
at once (accounts/revocation.py); without Redis other processes refuse it within that time.
Unknown keys are not cached, so a new key works immediately.

A key in use never waits for its lookup again: once three quarters of its time have
passed, the next request starts one lookup in the background (and is served from the cache,
which still holds), so the entry is renewed before it expires. Requests that do find no
entry share one lookup per key instead of each making its own (at 32 requests in flight,
the expiry of a busy key used to send 32 identical queries through the database's thread
at once: a stall of every request in flight, every `auth_cache_seconds`). A lookup that
was in flight while a key or account was evicted does not put its answer in the cache.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from minitoolai.accounts.keys import hash_secret
from minitoolai.clock import as_utc
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, api_keys
from minitoolai.errors import APIError, AuthenticationFailed, PermissionDenied

log = logging.getLogger(__name__)
REFRESH_AT = 0.75  # of auth_cache_seconds: when a key in use is looked up again, ahead


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key and its account."""

    key_id: str
    account_id: int
    expires_at: datetime | None = None  # the key's expiry (the hold checks it again)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "missing API key: send the header 'Authorization: Bearer YOUR_API_KEY'",
            code="missing_api_key",
        )
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "malformed Authorization header: expected 'Bearer YOUR_API_KEY'",
            code="invalid_authorization_header",
        )
    return token


def _expired(expires_at: datetime) -> AuthenticationFailed:
    return AuthenticationFailed(
        f"this API key expired on {expires_at:%Y-%m-%d %H:%M} UTC; create a new key in the"
        " dashboard", code="expired_api_key")


class Authenticator:
    def __init__(self, db: Database, cache_seconds: float = 2.0) -> None:
        self._db = db
        self._ttl = cache_seconds
        # digest -> (expires at, refresh from, principal)
        self._cache: dict[str, tuple[float, float, Principal]] = {}
        self._lookups: dict[str, asyncio.Task] = {}  # digest -> its lookup in flight
        self._evictions = 0  # bumped by every forget_*: a lookup begun before is not cached

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        digest = hash_secret(token)
        hit = self._cache.get(digest)
        if hit is not None:
            now = time.monotonic()
            if hit[0] > now:
                principal = hit[2]
                if principal.expires_at is not None and principal.expires_at <= self._db.now():
                    self._cache.pop(digest, None)
                    raise _expired(principal.expires_at)
                if hit[1] <= now and digest not in self._lookups:
                    self._lookup(digest).add_done_callback(_background_done)
                return principal
        task = self._lookups.get(digest) or self._lookup(digest)
        # shielded: a caller that goes away does not cancel the others' lookup
        return await asyncio.shield(task)

    def _lookup(self, digest: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(self._query(digest))
        self._lookups[digest] = task
        task.add_done_callback(lambda _, digest=digest: self._lookups.pop(digest, None))
        task.add_done_callback(_retrieved)  # its callers may all have gone: no warning
        return task

    async def _query(self, digest: str) -> Principal:
        evictions = self._evictions
        async with self._db.read() as conn:
            row = (await conn.execute(
                select(api_keys.c.id, api_keys.c.account_id, api_keys.c.revoked_at,
                       api_keys.c.expires_at, accounts.c.disabled)
                .join(accounts, accounts.c.id == api_keys.c.account_id)
                .where(api_keys.c.key_hash == digest)
            )).first()
        if row is None:
            self._cache.pop(digest, None)
            raise AuthenticationFailed("invalid API key", code="invalid_api_key")
        if row.revoked_at is not None:
            self._cache.pop(digest, None)
            raise AuthenticationFailed("this API key has been revoked", code="revoked_api_key")
        if row.disabled:
            self._cache.pop(digest, None)
            raise PermissionDenied("this account is disabled", code="account_disabled")
        expires_at = as_utc(row.expires_at)
        if expires_at is not None and expires_at <= self._db.now():  # the database's clock
            self._cache.pop(digest, None)
            raise _expired(expires_at)
        principal = Principal(row.id, row.account_id, expires_at)
        if self._ttl > 0 and evictions == self._evictions:
            if len(self._cache) > 100_000:
                self._cache.clear()
            now = time.monotonic()
            self._cache[digest] = (now + self._ttl, now + self._ttl * REFRESH_AT, principal)
        return principal

    def forget_key(self, key_id: str) -> None:
        """Evict a key (after revoke) so this process refuses it immediately."""
        self._evictions += 1
        for digest, (_, _, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]

    def forget_account(self, account_id: int) -> None:
        self._evictions += 1
        for digest, (_, _, principal) in list(self._cache.items()):
            if principal.account_id == account_id:
                del self._cache[digest]

    def forget_all(self) -> None:
        """Trust nothing cached (after missing revocation messages)."""
        self._evictions += 1
        self._cache.clear()


def _retrieved(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()


def _background_done(task: asyncio.Task) -> None:
    """A renewal nobody awaits: a refusal already evicted the key (the next request gets
    it); any other failure keeps the entry until it expires, then a request looks again."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, APIError):
        log.warning("renewing a cached API key failed: %s: %s", type(exc).__name__, exc)
