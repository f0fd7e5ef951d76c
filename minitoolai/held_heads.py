"""A response's head sent in the same write as its body.

uvicorn writes a response's status line and headers in a write of their own, then the body
in another: two system calls, and two wake-ups of the client, per answer. In the profiles
of the chat gateway the head's write was the costliest single line of a request (the one
that wakes the client). The protocol classes (slow_clients.py) hand uvicorn a transport that
holds a head back until the next write, which takes it along, or until the end of the
loop's current turn, which sends it alone (a stream whose first event is not there yet).
Writes keep their order; nothing else changes.
"""

from __future__ import annotations

import asyncio
from typing import Any

# how uvicorn begins a response head (its status lines are HTTP/1.1 whatever the request's)
_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"
# above this a body goes out with the head in one writev, not copied into one bytes
_COPY_LIMIT = 64 * 1024


class HeadHoldingTransport:
    """Wraps a connection's transport; only the writes, `close` and `abort` differ."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) < _COPY_LIMIT:
                self._transport.write(held + data)
            else:
                self._transport.writelines((held, data))
        elif data.startswith(_HEAD_START) and data.endswith(_HEAD_END):
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def writelines(self, parts) -> None:
        self._flush()
        self._transport.writelines(parts)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    # the rest, as the transport does it (the ones uvicorn calls per request spelled out)
    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HeldHeads:
    """Mixin for uvicorn's HTTP protocols: the transport they write to holds heads back."""

    def connection_made(self, transport) -> None:
        super().connection_made(HeadHoldingTransport(transport, self.loop))
