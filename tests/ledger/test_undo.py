"""The undo of a failed request's leftovers: at once, else in the background, the tries
further and further apart, until it lands or its holds would have expired anyway."""

from __future__ import annotations

import asyncio
import logging

import pytest

from minitoolai.ledger.undo import Undoer


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr("minitoolai.ledger.undo.RETRY_FIRST", 0.01)
    monkeypatch.setattr("minitoolai.ledger.undo.RETRY_MAX", 0.04)


class Flaky:
    """Fails its first `failures` tries (the database is away), then succeeds."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries = 0

    async def __call__(self) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise ConnectionRefusedError("the database is away")


async def test_done_at_once_needs_no_retry():
    undoer, attempt = Undoer(), Flaky(0)
    assert await undoer.undo("it", attempt, give_up_after=60) is True
    assert attempt.tries == 1 and undoer.pending == 0


async def test_retried_in_the_background_until_it_lands(caplog):
    caplog.set_level(logging.WARNING, logger="minitoolai.ledger.undo")
    undoer, attempt = Undoer(), Flaky(4)
    assert await undoer.undo("the release of r1", attempt, give_up_after=60) is False
    assert undoer.pending == 1
    while undoer.pending:
        await asyncio.sleep(0.01)
    assert attempt.tries == 5
    # one line when it fails, one when it lands: not one per try
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == \
        ["undoing the release of r1 failed",
         "undid the release of r1, now that the database is back"]


async def test_gives_up_once_the_holds_would_have_expired(caplog):
    undoer, attempt = Undoer(), Flaky(10**6)
    await undoer.undo("it", attempt, give_up_after=0.2)
    while undoer.pending:
        await asyncio.sleep(0.01)
    assert 2 <= attempt.tries < 10**6
    assert "gave up undoing it" in caplog.text


async def test_stop_leaves_the_rest_to_the_sweeper():
    undoer, attempt = Undoer(), Flaky(10**6)
    await undoer.undo("it", attempt, give_up_after=60)
    await undoer.stop()
    assert undoer.pending == 0
    tries = attempt.tries
    await undoer.undo("late", attempt, give_up_after=60)  # tried once, not retried
    assert attempt.tries == tries + 1 and undoer.pending == 0
