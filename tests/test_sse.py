"""The lean SSE response: chunks in order, and cleanup when dropped before it began."""

from __future__ import annotations

import asyncio

import pytest

from minitoolai.sse import EventStreamResponse


async def test_sends_every_chunk_then_ends():
    async def chunks():
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    sent = []

    async def receive():  # the client stays
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await EventStreamResponse(chunks())({"type": "http"}, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m.get("body") for m in sent[1:]] == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]


async def test_dropped_before_the_first_chunk_runs_the_cleanup():
    started = []
    cleaned = []

    async def chunks():
        started.append(True)  # never reached: the start message fails first
        yield b"x"

    async def abandon():
        cleaned.append(True)

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        raise OSError("client went away")

    with pytest.raises(OSError):
        await EventStreamResponse(chunks(), on_abandon=abandon)({"type": "http"}, receive,
                                                                  send)
    assert cleaned == [True] and started == []
