"""Bearer-key authentication, with a short in-process cache so the hot path skips a query.

The cache trusts a lookup for `auth_cache_seconds` (default 2 s). Revoking a key or
disabling an account evicts it from this process at once and, with Redis, from every process
at once (accounts/revocation.py); without Redis other processes refuse it within that time.
Unknown keys are not cached, so a new key works immediately.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from minitoolai.accounts.keys import hash_secret
from minitoolai.clock import as_utc
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, api_keys
from minitoolai.errors import AuthenticationFailed, PermissionDenied


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
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        token = bearer_token(authorization)
        digest = hash_secret(token)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            principal = hit[1]
            if principal.expires_at is not None and principal.expires_at <= self._db.now():
                self._cache.pop(digest, None)
                raise _expired(principal.expires_at)
            return principal
        async with self._db.read() as conn:
            row = (await conn.execute(
                select(api_keys.c.id, api_keys.c.account_id, api_keys.c.revoked_at,
                       api_keys.c.expires_at, accounts.c.disabled)
                .join(accounts, accounts.c.id == api_keys.c.account_id)
                .where(api_keys.c.key_hash == digest)
            )).first()
        if row is None:
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
        if self._ttl > 0:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (now + self._ttl, principal)
        return principal

    def forget_key(self, key_id: str) -> None:
        """Evict a key (after revoke) so this process refuses it immediately."""
        for digest, (_, principal) in list(self._cache.items()):
            if principal.key_id == key_id:
                del self._cache[digest]

    def forget_account(self, account_id: int) -> None:
        for digest, (_, principal) in list(self._cache.items()):
            if principal.account_id == account_id:
                del self._cache[digest]

    def forget_all(self) -> None:
        """Trust nothing cached (after missing revocation messages)."""
        self._cache.clear()
