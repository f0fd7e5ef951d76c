"""The event loop's stall monitor: a loop held by the code shows as a lag, and as time on
CPU; the metrics carry it to /metrics."""

from __future__ import annotations

import asyncio
import time

from minitoolai.observability import metrics
from minitoolai.observability.loop_monitor import LoopMonitor


async def test_a_held_loop_is_a_lag_spent_on_cpu():
    monitor = LoopMonitor(interval=0.005, log_over=10.0)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.02)  # the monitor is sleeping: its timer is set
        monitor.take_max()
        before = metrics.LOOP_LAG._sum.get()
        held_until = time.perf_counter() + 0.05
        while time.perf_counter() < held_until:  # the loop is held: nothing else runs
            pass
        await asyncio.sleep(0.02)  # the monitor wakes up late, and measures it
        lag, busy = monitor.take_max()
        # the loop was held 50 ms: the monitor cannot have woken earlier than its end
        assert lag >= 0.04
        assert busy > 0  # spent spinning on this thread (how much: the machine decides)
        assert metrics.LOOP_LAG._sum.get() - before >= 0.04
        assert monitor.take_max() == (0.0, 0.0)  # each scrape starts afresh
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
