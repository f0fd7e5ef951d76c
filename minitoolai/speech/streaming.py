"""Moving audio from an engine's thread to the client: a thread-to-loop bridge, and a
response that settles the request's hold exactly once, however the stream ends."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from minitoolai.speech.engines.base import EngineError

log = logging.getLogger(__name__)

_END = object()


class LocalStream:
    """Runs a local engine and encodes its PCM; iterate it on the loop.

    The engine's thread only synthesises: PCM crosses to the loop through an asyncio queue,
    and codecs that cost CPU (mp3, opus, aac, flac, tempo) run in the default thread pool,
    one chunk at a time in order. So a long mp3 does not hold the single eSpeak thread while
    it is encoded, and other requests' synthesis goes on meanwhile. Closing the iterator
    early (client gone) makes the next engine callback answer False, which stops the engine.
    """

    def __init__(self, engine, text: str, voice: str, speed: float, fmt: str) -> None:
        from minitoolai.speech.audio import Encoder  # PyAV: only with a local engine

        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._stop = threading.Event()
        self._inflight: asyncio.Future | None = None
        self.encoder = Encoder(fmt, engine.sample_rate(voice), engine.tempo(speed))
        self._future: Future = engine.start(text, voice, speed, self._on_pcm)
        self._future.add_done_callback(lambda _: self._post(_END))

    def _post(self, item) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
            self._stop.set()

    def _on_pcm(self, pcm: bytes) -> bool:
        """In the engine's thread, possibly inside a C callback: nothing here may raise."""
        if self._stop.is_set():
            return False
        self._post(pcm)
        return True

    async def _run(self, func, *args) -> bytes:
        if not self.encoder.costly:
            return func(*args)
        self._inflight = self._loop.run_in_executor(None, func, *args)
        # shielded: a cancelled request must not mark it done while the thread still runs
        return await asyncio.shield(self._inflight)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        finished = False
        # bytes (a wav or flac header) held back until some audio has been encoded: an
        # input that yields none ends with nothing at all, which speak() refuses (400)
        held = b""
        try:
            while True:
                item = await self._queue.get()
                if item is _END:
                    break
                try:
                    data = await self._run(self.encoder.feed, item)
                except Exception as exc:
                    raise EngineError(f"encoding failed: {exc}") from exc
                if not self.encoder.audible:
                    held += data
                elif held or data:
                    yield held + data
                    held = b""
            # an engine failure, whatever raised it, is an EngineError here
            try:
                self._future.result()
                tail = await self._run(self.encoder.finish)
            except Exception as exc:
                raise EngineError(f"{exc.__class__.__name__}: {exc}") from exc
            finished = True
            if self.encoder.audible and (held or tail):
                yield held + tail
        finally:
            if not finished:
                self._stop.set()
                # wait for the engine and any encoding in flight to notice; their errors,
                # if any, no longer matter, and the codec must not be freed under them
                pending = [f for f in (asyncio.wrap_future(self._future), self._inflight)
                           if f is not None and not f.done()]
                if pending:
                    await asyncio.wait(pending)
                self.encoder.close()


Finish = Callable[[str], Awaitable[None]]


class AudioResponse(StreamingResponse):
    """Streams `first` then `rest`, then calls `finish(status)` once: "ok" when every byte
    was sent, "cancelled" when the client went away, "error" when the source failed.
    `finish` must close `rest` (it may be left mid-iteration). On success it runs before the
    body's last (empty) message, so a client that has read the whole audio finds the
    request settled."""

    def __init__(self, first: bytes, rest: AsyncIterator[bytes], media_type: str,
                 headers: dict[str, str], finish: Finish) -> None:
        super().__init__(rest, media_type=media_type, headers=headers)
        self._first = first
        self._rest = rest
        self._finish = finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = "error"
        finished = False
        gone = asyncio.Event()
        # the body has been read: the next message is the client's disconnect, if it comes
        watcher = asyncio.ensure_future(self._watch(receive, gone))
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            if self._first:
                await send({"type": "http.response.body", "body": self._first,
                            "more_body": True})
            async for chunk in self._rest:
                if gone.is_set():
                    raise ConnectionResetError("the client went away")
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            status = "ok"
            finished = True
            await self._finish(status)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client disconnected (ASGI 2.4 servers raise it from send)
            status = "cancelled"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        except Exception:
            # the headers are gone already: all we can do is cut the body short, and log
            log.exception("speech stream failed after the response started")
        finally:
            watcher.cancel()
            if not finished:
                # closes the source (stopping the engine) and settles, shielded from a
                # second cancellation
                await self._finish(status)

    @staticmethod
    async def _watch(receive: Receive, gone: asyncio.Event) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                gone.set()
                return
