"""Key revocation and account disabling, pushed to every process at once through Redis
pub/sub when `redis_url` is set.

Each process caches key lookups for `auth_cache_seconds`. Whoever revokes a key or disables
an account (the CLI, the dashboard) publishes `key:ID` or `account:ID` on the channel
`{redis_key_prefix}auth-evict`; every `serve` subscribes and evicts from its cache, so the
key is refused everywhere at once. Without Redis, or while it is away, other processes
refuse it within `auth_cache_seconds`. A subscriber that lost its connection may have missed
messages, so on reconnecting it empties its cache.
"""

from __future__ import annotations

import asyncio
import logging
import time

from minitoolai import redis_link
from minitoolai.accounts.auth import Authenticator
from minitoolai.config import Settings
from minitoolai.redis_link import RedisLink, Unavailable, close_client

log = logging.getLogger(__name__)
CHANNEL = "auth-evict"
HEARTBEAT_SECONDS = 10.0  # a silent subscription is pinged this often; no answer: reconnect


class Revocations:
    """Evict here, and tell the other processes."""

    def __init__(self, auth: Authenticator, link: RedisLink) -> None:
        self._auth = auth
        self._link = link

    async def key_revoked(self, key_id: str) -> bool:
        """Evict the key here and everywhere; False when only here (no Redis now)."""
        self._auth.forget_key(key_id)
        return await self._publish(f"key:{key_id}")

    async def account_disabled(self, account_id: int) -> bool:
        self._auth.forget_account(account_id)
        return await self._publish(f"account:{account_id}")

    async def _publish(self, message: str) -> bool:
        if not self._link.configured:
            return False
        channel = self._link.channel(CHANNEL)
        try:
            await self._link.call(lambda client: client.publish(channel, message))
        except Unavailable:
            return False
        return True

    def _apply(self, data: bytes) -> None:
        kind, _, ident = data.decode("utf-8", "replace").partition(":")
        if kind == "key":
            self._auth.forget_key(ident)
        elif kind == "account" and ident.isdigit():
            self._auth.forget_account(int(ident))
        else:
            log.warning("ignored an unknown message on the revocation channel: %r", data[:100])

    async def run(self) -> None:
        """Subscribe and evict, for the life of the process; reconnects by itself."""
        if not self._link.configured:
            return
        client = self._link.client
        channel = self._link.channel(CHANNEL)
        lost = False
        while True:
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(self._link.timeout):
                    await pubsub.subscribe(channel)
                if lost:  # messages may have gone by meanwhile: trust nothing cached
                    self._auth.forget_all()
                    lost = False
                self._link.succeeded()
                await self._listen(pubsub)
            except redis_link.FAILURES as exc:
                lost = True
                await self._link.lost(exc)
                await asyncio.sleep(self._link.retry_seconds)
            finally:
                try:
                    await pubsub.aclose()
                except redis_link.FAILURES:
                    pass  # the connection is already gone; nothing is left to close

    async def _listen(self, pubsub) -> None:
        heard = time.monotonic()
        while True:
            message = await pubsub.get_message(timeout=HEARTBEAT_SECONDS)
            now = time.monotonic()
            if message is None:
                # a connection that died silently (no reset) never errors: ask it to answer
                if now - heard > 2 * HEARTBEAT_SECONDS + self._link.timeout:
                    raise ConnectionError("the revocation subscription stopped answering")
                await pubsub.ping()
                continue
            heard = now
            if message["type"] == "message":
                self._apply(message["data"])


async def announce(settings: Settings, *, key_id: str | None = None,
                   account_id: int | None = None) -> bool:
    """From a command-line process (no cache of its own): tell every `serve`. False when
    Redis is not configured or not reachable."""
    if not settings.redis_url:
        return False
    message = f"key:{key_id}" if key_id is not None else f"account:{account_id}"
    client = RedisLink.make_client(settings)
    try:
        async with asyncio.timeout(max(1.0, settings.redis_timeout_seconds)):
            await client.publish(settings.redis_key_prefix + CHANNEL, message)
        return True
    except redis_link.FAILURES as exc:
        log.warning("could not tell the other processes through Redis: %s", exc)
        return False
    finally:
        await close_client(client)
