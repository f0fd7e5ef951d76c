"""UpstreamStream: an upstream's SSE answer read as whole events, and when it needs closing."""

from __future__ import annotations

import asyncio

from minitoolai.chat.providers.openai_compatible import UpstreamStream
from tests.fakes.scripted_upstream import ScriptedServer, chunked, pool_for

EVENTS = [b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n',
          b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n',
          b"data: [DONE]\n\n"]


async def test_a_stream_read_to_its_end_is_closed_and_its_connection_kept():
    """`closed` is what lets the relay skip aclose() (and the task its shield costs): true
    only when the stream has nothing left to close."""
    async with ScriptedServer() as server:
        server.scripts = [chunked(EVENTS), chunked(EVENTS)]
        pool = pool_for(server)
        stream = UpstreamStream(await pool.post("/x", b"{}"))
        assert not stream.closed
        got = b"".join([item async for item in stream])
        assert got.endswith(b"data: [DONE]\n\n") and stream.usage.completion_tokens == 1
        assert stream.closed
        await stream.aclose()  # nothing to do: the connection went back to the pool
        again = UpstreamStream(await pool.post("/x", b"{}"))
        assert [item async for item in again] and again.closed
        await pool.aclose()
    assert server.connections == 1 and server.eofs == 0


async def test_a_stream_left_midway_is_not_closed_until_aclose_drops_it():
    async with ScriptedServer() as server:
        server.scripts = [chunked(EVENTS * 20, pause=0.02)]
        pool = pool_for(server)
        stream = UpstreamStream(await pool.post("/x", b"{}"))
        events = aiter(stream)
        assert await anext(events)
        assert not stream.closed  # the relay must close it: the upstream is still generating
        await events.aclose()
        await stream.aclose()
        assert stream.closed
        for _ in range(50):
            if server.eofs:
                break
            await asyncio.sleep(0.02)
        assert server.eofs == 1  # the upstream saw the connection end
        await pool.aclose()
