"""The event loop's stall monitor: a loop held by the code shows as a lag, and as time on
CPU; the metrics carry it to /metrics."""

from __future__ import annotations

import asyncio
import os
import time

from minitoolai.observability import metrics
from minitoolai.observability.loop_monitor import LoopMonitor, _open_schedstat, _runqueue_wait


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


def test_runqueue_wait_reads_the_kept_file_afresh():
    """The thread's schedstat is opened once and read again at each wake-up (pread at 0):
    each read is the kernel's current figure, never less than the one before."""
    fd = _open_schedstat()
    if fd is None:
        assert _runqueue_wait(None) == 0.0  # no schedstat here (not Linux)
        return
    try:
        first = _runqueue_wait(fd)
        with open("/proc/thread-self/schedstat", "rb") as handle:
            fresh = int(handle.read().split()[1]) / 1e9
        assert 0.0 <= first <= fresh <= _runqueue_wait(fd)
    finally:
        os.close(fd)
    assert _runqueue_wait(None) == 0.0


async def test_a_stall_over_the_threshold_is_logged_with_its_parts(caplog):
    monitor = LoopMonitor(interval=0.005, log_over=0.02)
    task = asyncio.create_task(monitor.run())
    try:
        await asyncio.sleep(0.02)
        held_until = time.perf_counter() + 0.05
        while time.perf_counter() < held_until:
            pass
        await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    lines = [r.getMessage() for r in caplog.records if "event loop stalled" in r.getMessage()]
    assert lines and "on CPU" in lines[0] and "waiting for a CPU" in lines[0], lines
