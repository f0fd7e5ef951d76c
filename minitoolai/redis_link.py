"""The optional Redis that every process shares (`redis_url`): a client, and a circuit
breaker that decides when to use it.

Redis holds what must be shared but is not money (per-key rate limits, dashboard throttles,
key revocation pushed to every process), so losing it must never block or fail a request:
every caller falls back on its per-process state. The breaker makes that cheap and quiet:
the first failure logs one warning and opens it; for `redis_retry_seconds` nobody calls
Redis; then one call (never a crowd) probes it, and success closes the breaker with one
line saying Redis is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from minitoolai.config import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)
T = TypeVar("T")

# what losing Redis looks like to a caller: redis-py's errors, a socket error it let through,
# and our own deadline. redis-py (about 6 MB) is imported with the first client
# (`make_client`), which adds its errors here: a server without redis_url never loads it,
# and nothing can raise them before. Callers read `redis_link.FAILURES` when they catch.
FAILURES: tuple[type[BaseException], ...] = (OSError, asyncio.TimeoutError)


class Unavailable(Exception):
    """Redis is not to be used for this call (unset, breaker open, or the call failed):
    fall back on the per-process state."""


class RedisLink:
    """One process's way to Redis. `client` is None when `redis_url` is unset."""

    def __init__(self, settings: Settings) -> None:
        self.prefix = settings.redis_key_prefix
        self.timeout = settings.redis_timeout_seconds
        self.retry_seconds = settings.redis_retry_seconds
        self.client: aioredis.Redis | None = None
        if settings.redis_url:
            self.client = self.make_client(settings)
        self._down_until = 0.0  # 0: closed (Redis in use); else monotonic time of next probe
        self._probing = False
        # bumped at every change of state: a call begun before the last change proves nothing
        # about the state now (a connection left from before an outage fails after it)
        self._generation = 0

    @staticmethod
    def make_client(settings: Settings, **options) -> aioredis.Redis:
        """A client whose every call ends within the timeout: short connect and read
        timeouts, at most one immediate retry, no backoff (the breaker is the backoff)."""
        global FAILURES
        import redis.asyncio as aioredis
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError
        from redis.retry import Retry

        FAILURES = (RedisError, OSError, asyncio.TimeoutError)
        timeout = settings.redis_timeout_seconds
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                   "retry": Retry(NoBackoff(), 1), **options}
        # a bounded pool (redis-py's default grows without limit: one connection per request
        # in flight); waiting for a free connection counts against the call's timeout
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=settings.redis_max_connections,
            timeout=timeout, **options)
        return aioredis.Redis(connection_pool=pool)

    @property
    def configured(self) -> bool:
        return self.client is not None

    def channel(self, name: str) -> str:
        return self.prefix + name

    def usable(self) -> bool:
        """Whether to call Redis now. While the breaker is open, False until the retry time;
        then True for one caller at a time (the probe), whose outcome is reported."""
        if not self._down_until:
            return self.client is not None
        if self._probing or time.monotonic() < self._down_until:
            return False
        self._probing = True
        return True

    def succeeded(self) -> None:
        if self._down_until:
            self._down_until = 0.0
            self._probing = False
            self._generation += 1
            log.info("Redis is reachable again: limits and revocations are shared again")

    def failed(self, exc: BaseException) -> None:
        """Open the breaker; only the first failure of an outage is logged."""
        first = not self._down_until
        if first:
            self._generation += 1
        self._down_until = time.monotonic() + self.retry_seconds
        self._probing = False
        if first:
            log.warning("Redis unreachable (%s: %s): rate limits and throttles are per process"
                        " and revocations reach other processes within auth_cache_seconds"
                        " until it is back; retrying every %g s",
                        type(exc).__name__, str(exc) or f"no answer within {self.timeout:g} s",
                        self.retry_seconds)

    async def call(self, factory: Callable[[aioredis.Redis], Awaitable[T]]) -> T:
        """`await factory(client)` within the timeout, through the breaker; raises
        Unavailable instead of any Redis failure."""
        if not self.usable():
            raise Unavailable
        generation = self._generation
        try:
            async with asyncio.timeout(self.timeout):
                result = await factory(self.client)
        except FAILURES as exc:
            if generation == self._generation:
                await self.lost(exc)
            raise Unavailable from exc
        except BaseException:  # cancelled (the client left) mid-probe: let another probe
            self._probing = False
            raise
        if self._down_until and generation == self._generation:
            self.succeeded()
        return result

    async def lost(self, exc: BaseException) -> None:
        """Redis failed a call: open the breaker, and drop the idle pooled connections (they
        went with Redis, and redis-py would hand each out once more to fail)."""
        self.failed(exc)
        try:
            await self.client.connection_pool.disconnect(inuse_connections=False)
        except FAILURES:
            pass  # closing sockets that are already gone: nothing more to do

    @property
    def healthy(self) -> bool:
        return self.client is not None and not self._down_until

    async def close(self) -> None:
        if self.client is not None:
            await close_client(self.client)


async def close_client(client: aioredis.Redis) -> None:
    """Close a client made by `make_client`, and its pool (which the client does not own)."""
    try:
        await client.aclose()
        await client.connection_pool.disconnect()
    except FAILURES:
        pass  # already gone with Redis
