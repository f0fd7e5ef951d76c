"""One HTTP exchange as the middleware and the routes share it: the request id, and what a
billed route learns (key, model, tokens, cost) for the access line and the metrics.

The exchange is reachable two ways: `scope[SCOPE_KEY]` for code that holds the request, and
a ContextVar for code deep in a service or a log filter. A ContextVar because it is
request-scoped by construction (each request runs in its own task, and the tasks a request
starts, e.g. its settlement, inherit it) and it spares every service signature a parameter.
"""

from __future__ import annotations

import os
import time
from contextvars import ContextVar

SCOPE_KEY = "minitoolai.exchange"
_current: ContextVar[Exchange | None] = ContextVar("minitoolai_exchange", default=None)


def new_request_id() -> str:
    """`req_` and 32 hex digits: the time in milliseconds (48 bits), then 80 random bits
    (UUIDv7's layout). Unique enough to be the usage row's key, and time-ordered, so that
    the unique indexes keyed by it (usage rows, ledger entries, holds) grow at their right
    edge: a batch of settlements then writes one index page where random ids wrote one
    each, and reads none back from disk (bench/RESULTS.md, issue 16 fourth pass: half the
    SQLite writes per request, -15 to -25 % PostgreSQL CPU per request)."""
    return f"req_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


class Exchange:
    __slots__ = (
        "characters",
        "completion_tokens",
        "cost",
        "error",
        "key_id",
        "model",
        "prompt_tokens",
        "request_id",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.key_id: str | None = None
        self.model: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.characters: int | None = None
        self.cost: int | None = None  # nanodollars charged by this request
        self.error: str | None = None  # the error type answered (or sent in-band)


def begin(scope: dict) -> tuple[Exchange, object]:
    """Start an exchange for this request (the middleware's job)."""
    exchange = Exchange(new_request_id())
    scope[SCOPE_KEY] = exchange
    return exchange, _current.set(exchange)


def end(token) -> None:
    _current.reset(token)


def current() -> Exchange | None:
    """The exchange of the request being served, or None (a worker, a CLI command, a test
    calling a service directly)."""
    return _current.get()


def request_id() -> str:
    """The id of the request being served (its x-request-id and its usage row's id), or a
    fresh one outside a request."""
    exchange = _current.get()
    return exchange.request_id if exchange is not None else new_request_id()


def note_key(key_id: str | None) -> None:
    exchange = _current.get()
    if exchange is not None:
        exchange.key_id = key_id


def note_model(model: str) -> None:
    exchange = _current.get()
    if exchange is not None:
        exchange.model = model


def note_usage(prompt_tokens: int, completion_tokens: int, cost: int) -> None:
    exchange = _current.get()
    if exchange is not None:
        exchange.prompt_tokens = prompt_tokens
        exchange.completion_tokens = completion_tokens
        exchange.cost = cost


def note_speech(characters: int, cost: int) -> None:
    exchange = _current.get()
    if exchange is not None:
        exchange.characters = characters
        exchange.cost = cost


def note_error(error_type: str) -> None:
    exchange = _current.get()
    if exchange is not None:
        exchange.error = error_type
