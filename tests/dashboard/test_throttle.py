"""BackoffThrottle: free failures, then waits that double per failure up to a cap; a success
resets the key; keys are independent (real time, short waits)."""

from __future__ import annotations

import time

from minitoolai.dashboard.throttle import BackoffThrottle


def test_backoff_doubles_caps_and_resets():
    throttle = BackoffThrottle(free=2, first_wait=0.2, max_wait=0.5)
    key, other = "203.0.113.9 a@example.com", "198.51.100.7 a@example.com"
    for _ in range(2):
        assert throttle.retry_after(key) == 0
        throttle.fail(key)
    first = throttle.retry_after(key)
    assert 0.1 < first <= 0.2
    assert throttle.retry_after(other) == 0  # the same account from elsewhere is free
    time.sleep(first + 0.05)
    assert throttle.retry_after(key) == 0
    throttle.fail(key)
    assert 0.3 < throttle.retry_after(key) <= 0.4  # doubled
    throttle.fail(key)
    assert 0.4 < throttle.retry_after(key) <= 0.5  # capped at max_wait
    throttle.reset(key)
    assert throttle.retry_after(key) == 0
