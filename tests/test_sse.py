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
    # [DONE] ends the response in the same message (one write to the socket, not two)
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"data: 1\n\n", True), (b"data: [DONE]\n\n", False)]


async def test_a_stream_without_done_ends_with_an_empty_message():
    async def chunks():
        yield b"event: response.completed\ndata: {}\n\n"

    sent = []

    async def receive():
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    await EventStreamResponse(chunks())({"type": "http"}, receive, send)
    assert [(m.get("body"), m.get("more_body")) for m in sent[1:]] == [
        (b"event: response.completed\ndata: {}\n\n", True), (b"", False)]


async def test_what_the_producer_does_after_done_is_not_a_hang_up():
    """After [DONE] the response is complete: the server answers the watcher's receive()
    with http.disconnect at once, which must not cancel the producer's cleanup."""
    cleaned = []
    hung_up = []

    async def chunks():
        try:
            yield b"data: [DONE]\n\n"
            await asyncio.sleep(0.01)  # e.g. closing the upstream
        finally:
            cleaned.append(True)

    complete = asyncio.Event()

    async def receive():
        await complete.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if not message.get("more_body", False) and message["type"] == "http.response.body":
            complete.set()

    await EventStreamResponse(chunks(), on_disconnect=lambda: hung_up.append(True))(
        {"type": "http"}, receive, send)
    assert cleaned == [True] and hung_up == []


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


def _client_leaving_after(sent_before_leaving: int):
    """receive/send for a client that hangs up once it has been sent so many bodies."""
    sent = []
    left = asyncio.Event()

    async def receive():
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if len([m for m in sent if m["type"] == "http.response.body"]) >= sent_before_leaving:
            left.set()

    return receive, send, sent


async def test_a_hang_up_stops_the_producer_at_once_by_default():
    produced = []
    told = []

    async def chunks():
        try:
            for i in range(100):
                produced.append(i)
                yield b"data: %d\n\n" % i
                await asyncio.sleep(0.01)
        finally:
            produced.append("closed")

    receive, send, _ = _client_leaving_after(2)
    await EventStreamResponse(chunks(), on_disconnect=lambda: told.append(True))(
        {"type": "http"}, receive, send)
    assert told == [True]
    assert produced[-1] == "closed" and len(produced) < 10


async def test_with_linger_the_producer_runs_to_its_end_and_nothing_more_is_sent():
    produced = []

    async def chunks():
        for i in range(20):
            produced.append(i)
            yield b"data: %d\n\n" % i
            await asyncio.sleep(0.005)

    receive, send, sent = _client_leaving_after(2)
    await EventStreamResponse(chunks(), linger=30)({"type": "http"}, receive, send)
    assert produced == list(range(20))  # every chunk was still asked for
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 2  # but none was sent after the hang-up, not even the end


async def test_linger_ends_with_a_cancel_when_its_time_runs_out():
    outcome = []

    async def chunks():
        yield b"data: 1\n\n"
        try:
            await asyncio.sleep(3600)  # a producer that never finishes
            yield b"never"
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    receive, send, _ = _client_leaving_after(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await EventStreamResponse(chunks(), linger=0.2)({"type": "http"}, receive, send)
    assert outcome == ["cancelled"]
    assert 0.2 <= loop.time() - started < 5
