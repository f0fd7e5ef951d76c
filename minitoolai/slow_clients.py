"""Timeouts for slow or idle clients, so that a socket that sends nothing, half a request line,
half the headers or half a body does not hold a connection (and its memory) for minutes.

What covers what (all in Settings, documented in docs/configuration.md):

- idle keep-alive between two requests: uvicorn's own `timeout_keep_alive`
  (`timeout_keep_alive_seconds`);
- a new connection that sends no complete request head, or a kept-alive one that starts a
  request and stalls in its headers (`header_timeout_seconds`): uvicorn has no such timer
  (its keep-alive timer stops at the first byte), so the HTTP protocol classes below add one.
  It runs from the connection's start, and from the end of each response, until the next
  request's headers are complete; then the connection is closed;
- the request body (`body_timeout_seconds`): http.read_body, the one reader every route uses,
  gives the whole body that long to arrive and answers 408 in the route's envelope.

Responses are not limited here: a client that reads a stream slowly is the stream's business
(back-pressure), and a client that goes away is noticed by the server's disconnect handling.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from minitoolai.held_heads import HeldHeads

try:  # uvicorn's faster parser, used by http="auto" when installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the installation
    HttpToolsProtocol = None


class _HeaderDeadline:
    """Mixin for uvicorn's HTTP protocols: close a connection whose next request head does
    not arrive complete within `header_timeout` seconds."""

    # uvicorn builds protocols from a class it is given (and pickles it by name for
    # --workers), so the one setting lives on the class; configure() sets it at start
    header_timeout: float = 10.0
    # One timer per connection, re-armed lazily: each response moves the deadline forward
    # and each request's head clears it, but neither touches the timer; when it fires it
    # closes the connection, waits for a later deadline, or finds none and stops. A timer
    # made and cancelled per request cost a measurable share of the gateway's CPU.
    _deadline: float | None = None  # loop time by which the awaited head must be complete
    _timer: asyncio.TimerHandle | None = None
    _waiting_cycle: Any = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # both of uvicorn's protocols start a new cycle once a request's headers are parsed
        if self._deadline is not None and self.cycle is not self._waiting_cycle:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # unless a pipelined request was parsed already (its cycle is running), wait for the
        # next request's head
        if (self.cycle is None or self.cycle.response_complete) \
                and not self.transport.is_closing():
            self._arm()

    def _arm(self) -> None:
        self._waiting_cycle = self.cycle
        self._deadline = self.loop.time() + self.header_timeout
        if self._timer is None:
            self._timer = self.loop.call_at(self._deadline, self._expired)

    def _disarm(self) -> None:
        self._deadline = None  # the timer, when it fires, finds nothing to do

    def _expired(self) -> None:
        self._timer = None
        if self._deadline is None:
            return
        if self.loop.time() < self._deadline:  # armed again since: wait for that deadline
            self._timer = self.loop.call_at(self._deadline, self._expired)
            return
        self._deadline = None
        if self.cycle is self._waiting_cycle and not self.transport.is_closing():
            self.transport.close()


# (HeldHeads: a response's head goes out with its body, held_heads.py)
class GuardedH11Protocol(_HeaderDeadline, HeldHeads, H11Protocol):
    pass


GuardedHttpToolsProtocol = (type("GuardedHttpToolsProtocol", (_HeaderDeadline, HeldHeads,
                                                              HttpToolsProtocol), {})
                            if HttpToolsProtocol is not None else None)


def configure(settings) -> None:
    """Apply the header timeout of `settings` to this process's protocol classes."""
    _HeaderDeadline.header_timeout = settings.header_timeout_seconds


def uvicorn_options(settings) -> dict[str, Any]:
    """The uvicorn options that bound slow clients (for `serve` and the tests' servers)."""
    configure(settings)
    return {"http": GuardedHttpToolsProtocol or GuardedH11Protocol,
            "timeout_keep_alive": settings.timeout_keep_alive_seconds}
