"""One pooled connection to an upstream, and the response of the request it carries now:
an asyncio protocol whose bytes httptools (llhttp, uvicorn's own parser) parses, each body
chunk appended to a list that the reader takes whole. The pool that holds these
connections, and why the client is written by hand, are in upstream_http.py.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import TYPE_CHECKING

import httptools

from minitoolai.errors import UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from minitoolai.chat.providers.upstream_http import UpstreamPool

# above this many unread body bytes the connection stops reading (TCP pushes back on the
# upstream) until the gateway has relayed them: a slow client does not grow our memory
HIGH_WATER = 256 * 1024


class UpstreamResponse(asyncio.Protocol):
    """One pooled connection, and the response of the request it carries now.

    The gateway reads the body with `read_any` (whatever arrived, at least one byte; b""
    at the end) or `read` (all of it), then calls `release` (back to the pool when the
    response was read to its end, else closed) or `close` (drop it: the upstream sees the
    connection end and stops generating).
    """

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._loop = pool.loop
        # the body's chunks, taken whole by read_any (emptied in place, never replaced):
        # httptools calls on_body per HTTP chunk, 20-100 of a stream, and the list's own
        # append as the callback spares each a Python call (the parser binds its callbacks
        # when it is made, hence before it)
        self._chunks: list[bytes] = []
        self.on_body = self._chunks.append
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_data = 0.0
        self._waiter: asyncio.Future | None = None
        self._paused = False
        self.lost = False
        self.registered = False  # counted in the pool's open connections (UpstreamPool._connect)
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._chunks.clear()
        self._buffered = 0
        self._error: Exception | None = None
        self._encoding: bytes | None = None  # gzip or deflate: decoded as it is read
        self._decoder = None
        self._interim = False  # within a 1xx answer (100 Continue, 103 Early Hints)
        self._in_use = False

    @property
    def usable(self) -> bool:
        """Open, and not closing (the upstream's close may be read with its callback due)."""
        return not self.lost and self._transport is not None \
            and not self._transport.is_closing()

    # ---- asyncio.Protocol ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._last_data = self._loop.time()
        if not self._in_use:  # bytes nobody asked for on an idle connection: not to be trusted
            self._transport.abort()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(UpstreamError(f"upstream {self._pool.name!r} sent invalid HTTP: {exc!r}"))
            self._transport.abort()
            return
        if self._chunks:  # body bytes came (on_body): counted with their framing, enough
            # for the high-water mark
            self._buffered += len(data)
            if self._buffered > HIGH_WATER and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._in_use and not self._complete:
            framed = b"content-length" in self.headers or b"transfer-encoding" in self.headers
            if self._headers_done and not framed and self._error is None and exc is None:
                self._complete = True  # a response without a length ends with its connection
            else:
                phase = "the response" if self._headers_done else "the connection"
                self._fail(UpstreamError(f"upstream {self._pool.name!r} broke off {phase}"
                                         + (f": {exc}" if exc else "")))
        self._wake()
        self._pool._lost(self)

    # ---- httptools callbacks -------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            # an interim answer; the real one follows on the same connection (RFC 9110 15.2)
            self._interim = True
            self.headers = {}
            return
        self.status = status
        self._headers_done = True
        encoding = self.headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding in (b"gzip", b"x-gzip"):
            self._encoding = b"gzip"
        elif encoding == b"deflate":
            self._encoding = b"deflate"
        elif encoding != b"identity":
            self._fail(UpstreamError(f"upstream {self._pool.name!r} answered in an encoding"
                                     f" it was not offered: {encoding.decode('latin-1')}"))
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        self._wake()

    # ---- waiting, with the read timeout ---------------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    async def _wait(self) -> None:
        # one timer per connection, re-armed lazily (creating and cancelling one per wait
        # would cost more than the wait): it fires at the last byte's time + read_timeout
        waiter = self._waiter = self._loop.create_future()
        if self._timer is None:
            self._timer = self._loop.call_at(self._last_data + self._pool.read_timeout,
                                             self._on_timer)
        await waiter

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:
            return  # nobody waits: the next wait arms it again
        due = self._last_data + self._pool.read_timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._on_timer)
            return
        phase = "went silent mid-response" if self._headers_done else "did not answer in time"
        self._fail(UpstreamTimeout(f"upstream {self._pool.name!r} {phase}"))
        if self._transport is not None:
            self._transport.abort()

    # ---- the exchange --------------------------------------------------------------------------
    def _send(self, request: bytes) -> None:
        self._reset()
        self._in_use = True
        self._last_data = self._loop.time()
        self._transport.write(request)

    async def _head(self) -> None:
        while not self._headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None:  # an encoding we cannot read
            raise self._error

    async def read_any(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for one at least);
        b"" once the response has ended."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._paused:
                    self._paused = False
                    # the silence is counted from now: the upstream was held back, not silent
                    self._last_data = self._loop.time()
                    self._transport.resume_reading()
                if self._encoding is not None:
                    data = self._decode(data)
                    if not data:
                        continue
                return data
            if self._error is not None:
                raise self._error
            if self._complete:
                if self._decoder is not None:
                    rest = self._decode(b"", final=True)
                    self._decoder = None
                    if rest:
                        return rest
                return b""
            await self._wait()

    def _decode(self, data: bytes, final: bool = False) -> bytes:
        try:
            if self._decoder is None:
                # "deflate" is zlib's format, but some servers send raw deflate (no header;
                # a zlib stream's first byte names method 8)
                wbits = 16 + zlib.MAX_WBITS if self._encoding == b"gzip" else \
                    zlib.MAX_WBITS if data[:1] and data[0] & 0x0F == 8 else -zlib.MAX_WBITS
                self._decoder = zlib.decompressobj(wbits)
            return self._decoder.flush() if final else self._decoder.decompress(data)
        except zlib.error as exc:
            self._error = UpstreamError(
                f"upstream {self._pool.name!r} sent a {self._encoding.decode()} body that does"
                f" not decode: {exc}")
            raise self._error from None

    async def read(self) -> bytes:
        """The whole body."""
        parts = []
        while data := await self.read_any():
            parts.append(data)
        return b"".join(parts)

    def release(self) -> None:
        """Done with the response: the connection goes back to the pool when the response
        was read to its end and both sides keep it alive; else it is closed. (The response
        is its connection: a holder must not touch it once released.)"""
        if not self._in_use:
            return
        if self._complete and self._keep_alive and not self._chunks and self._error is None \
                and not self.lost:
            self._in_use = False
            self._pool._release(self)
        else:
            self.close()

    def close(self) -> None:
        """Drop the connection (idempotent; nothing once released, as long as no other
        request took the connection since): the upstream sees it end."""
        if self._in_use:
            self._in_use = False
            self._abort()

    def _abort(self) -> None:
        if self._transport is not None and not self.lost:
            self._transport.abort()
