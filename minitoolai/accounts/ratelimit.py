"""Per-key request rate limiting: a token bucket per key, shared by every process through
Redis when `redis_url` is set, else (and while Redis is away) kept in this process.

With Redis the bucket is one Lua script run by EVALSHA: one atomic round trip per request,
timed by Redis's own clock so machines whose clocks differ still agree. The `limits` library
was considered: it offers fixed, moving and sliding windows, none of which is a token bucket
with a separate burst, so the semantics of `rate_limit_per_minute` + `rate_limit_burst` would
change; the script is fifteen lines.
"""

from __future__ import annotations

import math
import time

from minitoolai.errors import RateLimited
from minitoolai.redis_link import RedisLink, Unavailable

# KEYS[1] the bucket; ARGV: tokens per second, burst. Returns nil when a token was taken,
# else the seconds until one is there (a string: Redis turns Lua numbers into integers).
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) * rate)
local wait = false
if tokens >= 1 then tokens = tokens - 1 else wait = tostring((1 - tokens) / rate) end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
"""


class RateLimiter:
    """`per_minute` requests per key on average, bursts up to `burst`; 0 disables."""

    def __init__(self, per_minute: int, burst: int, link: RedisLink | None = None) -> None:
        self._per_minute = per_minute
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._link = link if link is not None and link.configured else None
        self.shared = self._link is not None  # then call check_shared, else check
        if self._link is not None:
            self._script = self._link.client.register_script(TOKEN_BUCKET)
            self._args = (repr(self._rate), repr(self._burst))
            self._prefix = self._link.prefix + "rate:"

    def check(self, key_id: str) -> None:
        """Without Redis: take one request from this process's bucket for the key, or raise
        RateLimited (429, Retry-After). Synchronous: the hot path pays no coroutine."""
        if self._rate > 0:
            wait = self._take_local(key_id)
            if wait is not None:
                self._refuse(wait)

    async def check_shared(self, key_id: str) -> None:
        """With Redis (`shared`): the same, from the bucket every process shares; this
        process's own while Redis is away."""
        if self._rate <= 0:
            return
        keys = (self._prefix + key_id,)
        try:
            wait = await self._link.call(
                lambda client: self._script(keys=keys, args=self._args, client=client))
        except Unavailable:  # Redis away: this process's own bucket, never an error
            self._refuse(self._take_local(key_id))
            return
        if wait is not None:
            self._refuse(float(wait))

    def _refuse(self, wait: float | None) -> None:
        if wait is None:
            return
        retry = max(1, math.ceil(wait))
        raise RateLimited(
            f"rate limit reached for this API key: {self._per_minute} requests per"
            f" minute; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )

    def _take_local(self, key_id: str) -> float | None:
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self._rate
        self._buckets[key_id] = (tokens - 1.0, now)
        return None
