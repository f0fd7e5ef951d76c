"""How late the event loop runs: the measure of a stall, when a callback, a collection, a
flush or a blocking call holds the loop and every request in flight waits behind it.

A task sleeps `interval` seconds again and again and records how much later than asked it
woke up (its lag). A stall of X ms shows as a lag of about X ms at the next wake-up. Cost:
one timer and one wake-up per interval, a few microseconds each (about 0.1 % of a core at
the default 10 ms). Off unless `loop_monitor_interval_ms` is set (bench/gateway.py sets it).

Exported: `minitoolai_event_loop_lag_seconds` (histogram of every wake-up's lag) and
`minitoolai_event_loop_lag_max_seconds` (the largest lag since the previous scrape of
/metrics, so that each scrape tells the worst of its interval); a lag over
`loop_stall_log_ms` is logged, with what the collector did meanwhile (a collection is the
one stall that no profiler attributes to code).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import time

from minitoolai.observability import metrics

log = logging.getLogger(__name__)


def _open_schedstat() -> int | None:
    """This thread's scheduler statistics (Linux), opened once: read at every wake-up, an
    open, read and close each time was most of the monitor's own cost."""
    try:
        return os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        return None


def _runqueue_wait(fd: int | None) -> float:
    """Seconds the thread of `fd` (_open_schedstat) has spent runnable but waiting for a
    CPU (0 where there is no schedstat): how much of a lag the OS, not the server, caused."""
    if fd is None:
        return 0.0
    try:
        return int(os.pread(fd, 128, 0).split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


class LoopMonitor:
    def __init__(self, interval: float, log_over: float) -> None:
        self.interval = interval
        self.log_over = log_over
        self.max_lag = 0.0  # since the last `take_max`
        self.worst = 0.0  # since start
        self.busy_max = 0.0  # of the lags since the last `take_max`, the most CPU spent in one
        self.gc_max = 0.0  # the longest garbage collection (seconds)
        self._collections = 0
        self._gc_time = 0.0
        self._gc_started = 0.0

    def take_max(self) -> tuple[float, float]:
        """The largest lag since the last call (a scrape), and the most of one the loop's
        thread spent on CPU (our code's own stall), and start again."""
        value, busy = self.max_lag, self.busy_max
        self.max_lag = self.busy_max = 0.0
        return value, busy

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        took = time.perf_counter() - self._gc_started
        self._collections += 1
        self._gc_time += took
        self.gc_max = max(self.gc_max, took)
        metrics.GC_PAUSE.observe(took)

    async def run(self) -> None:
        observe = metrics.LOOP_LAG.observe
        sleep, clock, interval = asyncio.sleep, time.perf_counter, self.interval
        cpu = time.thread_time  # this thread's CPU time: tells a busy loop from a preempted one
        schedstat = _open_schedstat()  # the loop's thread: this task runs on it
        waited = functools.partial(_runqueue_wait, schedstat)
        gc.callbacks.append(self._on_gc)
        try:
            while True:
                collections, gc_time = self._collections, self._gc_time
                asked, cpu0, queued0 = clock() + interval, cpu(), waited()
                await sleep(interval)
                lag = clock() - asked
                if lag < 0:
                    lag = 0.0
                observe(lag)
                if lag > self.max_lag:
                    self.max_lag = lag
                    self.worst = max(self.worst, lag)
                if lag > 0.001:
                    # of the time since the timer was set, how much did the thread run: all
                    # of it means our code held the loop; little of it, that the OS ran
                    # something else (a loaded machine) or a system call blocked
                    on_cpu = min(lag, cpu() - cpu0)
                    self.busy_max = max(self.busy_max, on_cpu)
                    if lag > self.log_over:
                        queued = waited() - queued0
                        log.warning("event loop stalled %.1f ms: on CPU %.1f ms (%d garbage"
                                    " collection(s), %.1f ms), waiting for a CPU %.1f ms (the"
                                    " machine's other processes), the rest blocked (a system"
                                    " call, the GIL)", lag * 1000, on_cpu * 1000,
                                    self._collections - collections,
                                    (self._gc_time - gc_time) * 1000, queued * 1000)
        finally:
            gc.callbacks.remove(self._on_gc)
            if schedstat is not None:
                os.close(schedstat)
