"""Counting failures (logins, code redemptions) per key in a sliding window, in this process.

Enough to make guessing passwords or codes slow; several server processes each keep their
own count, which multiplies the allowance by the number of processes and no more.
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
