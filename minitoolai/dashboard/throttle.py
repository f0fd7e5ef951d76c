"""Counting failures (logins, code redemptions) per key, in this process: a sliding window
(FailureThrottle) and exponential backoff (BackoffThrottle).

Enough to make guessing passwords or codes slow; several server processes each keep their
own count, which multiplies the allowance by the number of processes and no more (sharing
the counts through Redis is future work, see docs/dashboard.md).
"""

from __future__ import annotations

import time
from collections import deque


class FailureThrottle:
    def __init__(self, limit: int, window_seconds: float = 900.0) -> None:
        self._limit = limit
        self._window = window_seconds
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self._window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        return any(len(self._recent(k, now)) >= self._limit for k in keys)

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
            self._failures.clear()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def reset(self, *keys: str) -> None:
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
