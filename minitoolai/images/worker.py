"""The worker: claim a batch of compatible jobs, run the backend, store the images, and
complete the jobs (state change + charge in one transaction).

Runs embedded in `serve` (asyncio tasks) or alone in `minitoolai worker` processes.
While a batch runs, a heartbeat renews its lease; a worker that dies stops renewing and
another worker's `recover` puts the jobs back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from minitoolai.clock import utcnow
from minitoolai.db.faults import as_unavailable
from minitoolai.errors import DatabaseUnavailable, UpstreamError, UpstreamTimeout
from minitoolai.images import queue
from minitoolai.images.storage import new_image_key

log = logging.getLogger(__name__)

# failures worth another attempt; anything else fails the job at once
RETRYABLE = (UpstreamError, UpstreamTimeout, ConnectionError, TimeoutError)
# while the database is away, the poll interval doubles up to this (seconds): polling at
# the usual interval would only fill the log (and the database's first seconds back)
AWAY_POLL_MAX = 2.0


class Worker:
    def __init__(self, db, settings, backends: dict, storage, *, name: str = "worker",
                 wake: asyncio.Event | None = None, on_done=None) -> None:
        self.db = db
        self.settings = settings  # the ImagesSettings section
        self.storage = storage
        self.name = name
        self.wake = wake
        self.on_done = on_done  # called after jobs finish (wakes /v1 waiters)
        # models grouped by backend object: one claim per group, with its batch size
        groups: dict[int, tuple[object, list[str]]] = {}
        for model, backend in backends.items():
            groups.setdefault(id(backend), (backend, []))[1].append(model)
        self.groups = list(groups.values())
        self._next_recover = 0.0
        self._stopping = False
        self._away_poll = 0.0  # seconds between polls while the database is away; 0: it is not

    def stop(self) -> None:
        """Take no new job; `run` returns once the batch in hand (if any) is done."""
        self._stopping = True
        if self.wake is not None:
            self.wake.set()

    async def run(self, *, burst: bool = False) -> None:
        """Work until stopped or cancelled; burst: stop when the queue has nothing for us.
        Cancelled mid-batch, the batch's jobs go back to the queue at once."""
        while not self._stopping:
            try:
                await self._maybe_recover()
                worked = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database hiccup must not kill the worker loop
                if as_unavailable(exc, raw_io=True) is None:
                    log.exception("%s: claiming or completing jobs failed", self.name)
                else:
                    self._database_away(exc)
                worked = 0
            else:
                self._database_back()
            if worked:
                continue
            if burst or self._stopping:
                return
            await self._idle(self._away_poll or self.settings.poll_interval_seconds)

    def _database_away(self, exc: Exception) -> None:
        """One warning per outage, and polls further and further apart (like Redis's
        breaker, redis_link.py): not an error line per poll."""
        if not self._away_poll:
            log.warning("%s: the database is unavailable (%s: %s); polling every %g s at"
                        " most until it is back", self.name, type(exc).__name__, exc,
                        AWAY_POLL_MAX)
        self._away_poll = min(max(self._away_poll * 2, self.settings.poll_interval_seconds),
                              max(AWAY_POLL_MAX, self.settings.poll_interval_seconds))

    def _database_back(self) -> None:
        if self._away_poll:
            self._away_poll = 0.0
            log.info("%s: the database is reachable again; polling every %g s", self.name,
                     self.settings.poll_interval_seconds)

    async def _idle(self, seconds: float) -> None:
        if self.wake is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            # a submit wakes it at once (and, after an outage, shows the database is back)
            await asyncio.wait_for(self.wake.wait(), seconds)
        self.wake.clear()

    async def _maybe_recover(self) -> None:
        now = time.monotonic()
        if now < self._next_recover:
            return
        self._next_recover = now + min(self.settings.lease_seconds / 2, 10.0)
        changed = await queue.recover(
            self.db, max_attempts=self.settings.max_attempts,
            queue_timeout_seconds=self.settings.queue_timeout_seconds)
        if changed:
            log.warning("%s: recovered %d job(s) from stopped workers or a stale queue",
                        self.name, changed)
            if self.on_done:
                self.on_done()

    async def run_once(self) -> int:
        """Claim and run at most one batch per backend; returns how many jobs ran."""
        total = 0
        for backend, models in self.groups:
            if self._stopping:
                break
            token, jobs = await queue.claim(
                self.db, models=models, max_batch=backend.max_batch,
                lease_seconds=self.settings.lease_seconds,
                hold_ttl_seconds=self.settings.hold_ttl_seconds)
            if jobs:
                await self._run_batch(backend, token, jobs)
                total += len(jobs)
        return total

    async def _heartbeat(self, token: str) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await queue.renew(self.db, token, self.settings.lease_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:  # the lease may still be renewed next time
                log.exception("%s: renewing lease %s failed", self.name, token)

    async def _hand_back(self, token: str, jobs: list) -> None:
        try:
            handed = await queue.hand_back(self.db, token, jobs)
        except Exception:  # the database is away: the lease lapses and recover() requeues
            log.exception("%s: handing back %d job(s) failed", self.name, len(jobs))
            return
        log.warning("%s: stopping; handed %d job(s) back to the queue", self.name, handed)

    async def _complete(self, token: str, stored: list, expires_at) -> tuple[set, bool]:
        """Record the finished jobs (and charge them); while the database is away, try
        again for up to half the lease, so that a short outage does not throw away work
        that is done. Returns (the ids this worker completed, whether it had to retry)."""
        deadline = time.monotonic() + self.settings.lease_seconds / 2
        delay, retried = 0.2, False
        while True:
            try:
                return set(await queue.complete(self.db, token, stored, expires_at)), retried
            except DatabaseUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("%s: the database is unavailable; completing %d job(s) again in"
                            " %.1f s", self.name, len(stored), delay)
            await asyncio.sleep(delay)
            delay, retried = min(delay * 2, 2.0), True

    async def _run_batch(self, backend, token: str, jobs: list) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(token))
        try:
            try:
                images = await backend.generate(jobs)
                if len(images) != len(jobs):
                    raise RuntimeError(f"backend returned {len(images)} images for"
                                       f" {len(jobs)} jobs")
                stored = []
                for job, png in zip(jobs, images, strict=True):
                    key = new_image_key()
                    await self.storage.put(key, png)
                    stored.append((job, key))
            except asyncio.CancelledError:
                # stopped past the drain time: hand the jobs back now, so that another
                # worker runs them at once rather than after the lease lapses (a backend
                # thread still running finishes into nothing: the lease is no longer ours)
                await asyncio.shield(self._hand_back(token, jobs))
                raise
            except Exception as exc:
                retry = isinstance(exc, RETRYABLE)
                detail = str(exc) or type(exc).__name__
                log.warning("%s: %d job(s) failed (%s)%s", self.name, len(jobs), detail,
                            ", may retry" if retry else "")
                # the jobs endpoint needs no key: its message must not show the operator's
                # hosts, paths or internals (those are in the log above)
                reason = ("image generation failed on this server's image backend; nothing"
                          " was charged")
                await queue.fail(self.db, token, jobs, reason, retry=retry,
                                 max_attempts=self.settings.max_attempts)
                return
            expires_at = utcnow() + timedelta(hours=self.settings.retention_hours)
            won, retried = await self._complete(token, stored, expires_at)
            for job, key in stored:
                # our lease lapsed and another worker took the job; after a retry, the first
                # try may have committed unseen (its image is the job's): keep the file
                if job.id not in won and not retried:
                    await self.storage.delete(key)
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if self.on_done:
                self.on_done()
