"""Per-key request rate limiting: a token bucket per key, in this process."""

from __future__ import annotations

import math
import time

from minitoolai.errors import RateLimited


class RateLimiter:
    """`per_minute` requests per key on average, bursts up to `burst`; 0 disables."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def check(self, key_id: str) -> None:
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self._rate))
            self._buckets[key_id] = (tokens, now)
            raise RateLimited(
                f"rate limit reached for this API key: {int(self._rate * 60)} requests per"
                f" minute; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        self._buckets[key_id] = (tokens - 1.0, now)
