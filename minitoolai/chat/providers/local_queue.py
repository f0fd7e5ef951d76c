"""The fair queue in front of one local model: one worker thread, jobs in arrival order.

A model's context can run one generation at a time, so each local model gets exactly one
worker thread that takes jobs first-in first-out from a bounded deque. A full deque refuses
the job at once (503), rather than letting clients wait without bound. A cancelled job that
is still waiting leaves the deque at once; a running one stops between two tokens.

Output crosses from the worker thread to the event loop through a `Channel`: the worker
appends, and wakes the loop only when the consumer is actually waiting, so a fast model and
a busy loop cost one wake-up per batch of tokens rather than one per token.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from minitoolai.chat.providers.local_engine import Engine, Outcome, Prepared
from minitoolai.errors import ServiceUnavailable


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Channel:
    """Items from one thread to one async consumer, in order, drained in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[tuple[str, Any]] = deque()
        self._waiter: asyncio.Future | None = None
        self._lock = threading.Lock()

    def put(self, kind: str, value: Any) -> bool:
        """Called from the worker thread. False when the loop is gone (nobody will read)."""
        with self._lock:
            self._items.append((kind, value))
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            try:
                self._loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the event loop was closed under us: the reader is gone
                return False
        return True

    async def get_all(self) -> list[tuple[str, Any]]:
        while True:
            with self._lock:
                if self._items:
                    items = list(self._items)
                    self._items.clear()
                    return items
                waiter = self._waiter = self._loop.create_future()
            await waiter


class Job:
    """One request's generation: its prompt, its cancel flag, and where its output goes."""

    def __init__(self, prepared: Prepared, channel: Channel,
                 render: Callable[[str], Any]) -> None:
        self.prepared = prepared
        self.channel = channel
        self.render = render  # turns a piece of text into what the reader wants (SSE bytes)
        self.cancelled = threading.Event()
        self.queue: LocalQueue | None = None

    def emit(self, text: str) -> None:
        if not self.channel.put("text", self.render(text)):
            self.cancelled.set()

    def cancel(self) -> None:
        """Stop now: leave the queue if still waiting, else stop after the current token.
        Either way the reader gets an end outcome; for a withdrawn job it is put here and
        counts the prompt alone (charged in every case, as when the worker stops a job)."""
        self.cancelled.set()
        if self.queue is not None and self.queue.withdraw(self):
            self.channel.put("end", Outcome(prompt_tokens=len(self.prepared.tokens),
                                            cancelled=True))


class LocalQueue:
    """A bounded FIFO of jobs and the one worker thread that runs them on the engine."""

    def __init__(self, engine: Engine, name: str, size: int) -> None:
        self.engine = engine
        self.name = name
        self.size = size
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.running: Job | None = None
        self._thread = threading.Thread(target=self._work, name=f"minitoolai-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        with self._cond:
            if self._closed:
                raise ServiceUnavailable(f"the local model {self.name!r} is shutting down",
                                         code="model_unavailable")
            if len(self._waiting) >= self.size:
                raise ServiceUnavailable(
                    f"the local model {self.name!r} is busy: {len(self._waiting)} requests are"
                    " already waiting for it, which is its queue's limit; retry shortly",
                    code="model_busy", headers={"Retry-After": "1"})
            job.queue = self
            self._waiting.append(job)
            self._cond.notify()

    def withdraw(self, job: Job) -> bool:
        """Take a waiting job out of the queue; False if it was not waiting."""
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:  # already taken by the worker (or finished): its flag stops it
                return False
            return True

    def _next(self) -> Job | None:
        with self._cond:
            while not self._waiting and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            job = self.running = self._waiting.popleft()
            return job

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                outcome: Outcome = self.engine.generate(job.prepared, job.cancelled, job.emit)
            except Exception as exc:  # noqa: BLE001 - a failed decode belongs to this job only
                job.channel.put("error", exc)
            else:
                job.channel.put("end", outcome)
            finally:
                self.running = None

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, fail the waiting ones, stop the running one, join the worker."""
        with self._cond:
            self._closed = True
            waiting = list(self._waiting)
            self._waiting.clear()
            running = self.running
            self._cond.notify_all()
        for job in waiting:
            job.cancelled.set()
            job.channel.put("error", ServiceUnavailable(
                f"the local model {self.name!r} is shutting down", code="model_unavailable"))
        if running is not None:
            running.cancelled.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
