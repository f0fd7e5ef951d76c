"""Counting failures (logins, code redemptions) per key: a sliding window (FailureThrottle)
and exponential backoff (BackoffThrottle, in this process).

Enough to make guessing passwords or codes slow. Where the window's failures are counted is a
small storage interface: `LocalFailures` (this process) or `RedisFailures` (every process,
when `redis_url` is set; a sorted set of failure times per key, trimmed and counted in one Lua
call timed by Redis's clock). While Redis is away, RedisFailures counts in this process,
which multiplies the allowance by the number of processes and no more.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from typing import Protocol

from minitoolai.redis_link import RedisLink, Unavailable


class FailureStore(Protocol):
    """Failure times per key, within a window of seconds."""

    async def count(self, keys: tuple[str, ...], window: float) -> list[int]: ...
    async def add(self, keys: tuple[str, ...], window: float) -> None: ...
    async def clear(self, keys: tuple[str, ...]) -> None: ...


class LocalFailures:
    def __init__(self) -> None:
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float, window: float) -> int:
        times = self._failures.get(key)
        if times is None:
            return 0
        while times and times[0] <= now - window:
            times.popleft()
        if not times:
            del self._failures[key]
        return len(times)

    async def count(self, keys: tuple[str, ...], window: float) -> list[int]:
        now = time.monotonic()
        return [self._recent(k, now, window) for k in keys]

    async def add(self, keys: tuple[str, ...], window: float) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    async def clear(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            self._failures.pop(key, None)


class BackoffThrottle:
    """Failures per key with exponential backoff: the first `free` failures cost nothing,
    then each further attempt must wait `first_wait` seconds after the last failure, doubled
    per failure, up to `max_wait`. A success resets the key; a key unused for `max_wait`
    is forgotten.

    Keyed by (client address, account), it stops one client guessing an account's password
    without locking the account's owner out: the owner's own address has its own count.
    """

    def __init__(self, free: int, first_wait: float = 30.0, max_wait: float = 900.0) -> None:
        self._free = free
        self._first = first_wait
        self._max = max_wait
        self._state: dict[str, tuple[int, float]] = {}  # key -> (failures, last failure)

    def _wait(self, failures: int) -> float:
        if failures < self._free:
            return 0.0
        return min(self._max, self._first * 2 ** min(failures - self._free, 32))

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again (0: now)."""
        state = self._state.get(key)
        if state is None:
            return 0.0
        failures, last = state
        now = time.monotonic()
        if now - last >= self._max:
            del self._state[key]
            return 0.0
        return max(0.0, last + self._wait(failures) - now)

    def fail(self, key: str) -> None:
        if len(self._state) > 100_000:  # bounded memory under a spray of addresses
            self._state.clear()
        failures, _ = self._state.get(key, (0, 0.0))
        self._state[key] = (failures + 1, time.monotonic())

    def reset(self, key: str) -> None:
        self._state.pop(key, None)


# KEYS: sorted sets of failure times. ARGV[1] the window in seconds; ARGV[2] "" to count, or
# a unique token to add a failure (the member must be unique: two failures in the same
# microsecond are two failures). Returns the counts after trimming (before adding).
_FAILURES = """
local window = tonumber(ARGV[1])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  counts[i] = redis.call('ZCARD', key)
  if ARGV[2] ~= '' then
    redis.call('ZADD', key, now, ARGV[2] .. ':' .. i)
    redis.call('PEXPIRE', key, math.ceil(window * 1000))
  end
end
return counts
"""


class RedisFailures:
    """Shared by every process through Redis; this process's own count while it is away."""

    def __init__(self, link: RedisLink, name: str) -> None:
        self._link = link
        self._prefix = f"{link.prefix}throttle:{name}:"
        self._script = link.client.register_script(_FAILURES)
        self._local = LocalFailures()

    async def _run(self, keys: tuple[str, ...], window: float, token: str) -> list[int]:
        redis_keys = [self._prefix + k for k in keys]
        counts = await self._link.call(lambda client: self._script(
            keys=redis_keys, args=[repr(float(window)), token], client=client))
        return [int(c) for c in counts]

    async def count(self, keys: tuple[str, ...], window: float) -> list[int]:
        try:
            return await self._run(keys, window, "")
        except Unavailable:
            return await self._local.count(keys, window)

    async def add(self, keys: tuple[str, ...], window: float) -> None:
        try:
            await self._run(keys, window, uuid.uuid4().hex)
        except Unavailable:
            await self._local.add(keys, window)

    async def clear(self, keys: tuple[str, ...]) -> None:
        await self._local.clear(keys)
        redis_keys = [self._prefix + k for k in keys]
        try:
            await self._link.call(lambda client: client.delete(*redis_keys))
        except Unavailable:
            pass  # the failures then age out of the window by themselves


class FailureThrottle:
    """Blocks a key after `limit` failures within `window_seconds`."""

    def __init__(self, limit: int, window_seconds: float = 900.0,
                 store: FailureStore | None = None) -> None:
        self._limit = limit
        self._window = window_seconds
        self._store = store if store is not None else LocalFailures()

    @classmethod
    def for_link(cls, name: str, limit: int, link: RedisLink | None,
                 window_seconds: float = 900.0) -> FailureThrottle:
        """Shared through Redis when the link is configured, else per process."""
        store = RedisFailures(link, name) if link is not None and link.configured else None
        return cls(limit, window_seconds, store)

    async def blocked(self, *keys: str) -> bool:
        return any(n >= self._limit for n in await self._store.count(keys, self._window))

    async def fail(self, *keys: str) -> None:
        await self._store.add(keys, self._window)

    async def reset(self, *keys: str) -> None:
        await self._store.clear(keys)
