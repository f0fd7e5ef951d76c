"""Undo what a failed request left in the database, now or, while the database is away,
in the background.

A request that answers an error must leave no credit held. Usually giving its hold back is
one statement; but when the database goes away mid-request that statement fails too, and
a hold's COMMIT may even have landed with its answer lost (db/pg_ledger.py): the request
was told it failed, and nothing else knows the hold is there. The sweeper would release it
after the hold's TTL (15 minutes for chat, hours for an image), and meanwhile the held
credit refuses the customer's next requests with 402. So the undo is tried at once and,
if the database is away, again in the background (RETRY_FIRST doubling to RETRY_MAX
seconds) until it lands or the hold would have expired anyway. Every undo handed here must
be idempotent (releasing a hold that is already gone, or never was, does nothing): a try
whose answer was lost may have been done.

The same retry serves a step that must follow a success the client has been told of
(`finish`): an image submit's queueing of its jobs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

RETRY_FIRST, RETRY_MAX = 0.5, 10.0  # seconds between tries while the database is away

Attempt = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class _Words:
    """How the log tells of one kind of retry."""
    doing: str
    done: str
    left: str


_UNDO = _Words("undoing", "undid", "its hold is left to the sweeper (it expires)")
_FINISH = _Words("finishing", "finished", "the sweeper fails what is left and releases its hold")


class Undoer:
    """The undos of one owner (the hold keeper, the images service) still being retried."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()
        self._stopped = False

    async def undo(self, name: str, attempt: Attempt, *, give_up_after: float) -> bool:
        """Try `attempt` now; if it fails, keep trying in the background for up to
        `give_up_after` seconds (the TTL of the holds it gives back). True: done now."""
        return await self._now_or_later(_UNDO, name, attempt, give_up_after)

    async def finish(self, name: str, attempt: Attempt, *, give_up_after: float) -> bool:
        """`undo`'s retries for the last step of a request that succeeds whatever it does:
        what is not done after `give_up_after` seconds is left to the sweeper."""
        return await self._now_or_later(_FINISH, name, attempt, give_up_after)

    async def _now_or_later(self, words: _Words, name: str, attempt: Attempt,
                            give_up_after: float) -> bool:
        try:
            await attempt()
            return True
        except Exception as exc:  # noqa: BLE001 - the database is away (or broke mid-statement)
            self.later(name, attempt, give_up_after=give_up_after, error=exc, words=words)
            return False

    def later(self, name: str, attempt: Attempt, *, give_up_after: float,
              error: BaseException | None = None, words: _Words | None = None) -> None:
        """`attempt` failed just now: retry it in the background."""
        words = words or _UNDO
        if self._stopped:  # shutting down: the sweeper releases what is left
            log.warning("%s %s failed at shutdown; %s", words.doing, name, words.left)
            return
        log.warning("%s %s failed (%s); retrying in the background until the database"
                    " takes it", words.doing, name,
                    f"{type(error).__name__}: {error}" if error else "")
        task = asyncio.get_running_loop().create_task(
            self._retry(words, name, attempt, time.monotonic() + give_up_after),
            name=f"undo-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _retry(words: _Words, name: str, attempt: Attempt, deadline: float) -> None:
        delay = RETRY_FIRST
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            try:
                await attempt()
            except Exception:  # noqa: BLE001 - still away
                delay = min(delay * 2, RETRY_MAX)
                continue
            log.warning("%s %s, now that the database is back", words.done, name)
            return
        log.error("gave up %s %s; %s", words.doing, name, words.left)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """At shutdown: what is not undone yet is left to the sweeper (holds expire)."""
        self._stopped = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
