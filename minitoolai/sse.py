"""A lean streaming response for server-sent events.

Starlette's StreamingResponse opens an anyio task group and a listener task for every
response; on the chat hot path that is a measurable share of the CPU. This one sends the
iterator's chunks as they come and runs one small watcher task for the client's hang-up.

What a hang-up does is the producer's choice. By default the sending task is cancelled,
so the iterator's `finally` runs at once. With `linger`, the response keeps pulling the
iterator to its end, sending nothing, for up to `linger` seconds (then it cancels): the
chat relay uses this to read the upstream's stream to its usage event, so that a client
who leaves early is charged what the upstream counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
STREAM_END = b"data: [DONE]\n\n"  # OpenAI's last event of a stream


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], status_code: int = 200,
                 on_abandon: Callable[[], Awaitable[None]] | None = None,
                 on_disconnect: Callable[[], None] | None = None,
                 linger: float | None = None) -> None:
        self.chunks = chunks
        # closing a generator that never started skips its `finally`: whoever made it says
        # here how to clean up if the response is dropped before the first chunk is asked for
        self.on_abandon = on_abandon
        self.on_disconnect = on_disconnect  # told of the hang-up first, before anything else
        self.linger = linger
        self._started = False
        self.status_code = status_code
        self.background = None
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender = asyncio.current_task()
        gone = asyncio.Event()
        deadline: list[asyncio.TimerHandle] = []

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    if self.on_disconnect is not None:
                        self.on_disconnect()
                    if self.linger is None:
                        sender.cancel()
                    else:
                        deadline.append(asyncio.get_running_loop().call_later(
                            self.linger, sender.cancel))
                    return

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            self._started = True
            ended = False
            async for chunk in self.chunks:
                if gone.is_set() or ended:  # nobody to send to: let the producer finish
                    continue
                # the end of an OpenAI stream ends the response in the same write (one
                # system call and one wake-up of the client less); what the producer does
                # after it (closing the upstream) needs no client, so the watcher stops
                # first: the connection's next request must not read as a hang-up
                ended = chunk.endswith(STREAM_END)
                if ended:
                    watcher.cancel()
                await send({"type": "http.response.body", "body": chunk,
                            "more_body": not ended})
            if not gone.is_set() and not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone.is_set():
                raise  # cancelled from outside (shutdown): not ours to swallow
            sender.uncancel()
        finally:
            for handle in deadline:
                handle.cancel()
            watcher.cancel()
            await self.chunks.aclose()
            if not self._started and self.on_abandon is not None:
                await asyncio.shield(self.on_abandon())
