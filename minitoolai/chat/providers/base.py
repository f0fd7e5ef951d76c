"""The provider seam: every chat backend (upstream HTTP or in-process model) implements it.

The gateway validates a request into a `ChatRequest`, reserves credit, then asks the
routed provider for a `ChatStream`. The stream yields ready-to-send SSE bytes, one or more
whole events per item (``b"data: {...}\\n\\n"``), ending with ``b"data: [DONE]\\n\\n"``,
in exactly the seed's shape (chat.completion.chunk events, a chunk with finish_reason, a
usage chunk with ``"choices": []``). After iteration, `usage` holds the counts the
provider reported (None if it never did: the gateway then charges an estimate).
A provider sets `usage` just before it yields the usage event, and yields that event as an
item of its own: the gateway recognises it that way, adds the cost to it (or drops it when
the client did not ask for usage), and never parses any other chunk.

A client that hangs up does not change the price: the gateway keeps reading the stream to
its usage event (see chat/service.py), so a provider must not stop on its own when nobody
reads, except an in-process model told by `client_left`, which reports what it computed.

Providers raise `UpstreamError` / `UpstreamTimeout` / `ServiceUnavailable` (errors.py)
*before the first byte* when they cannot serve; the gateway may then retry another route.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from minitoolai.catalog import Model


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    raw: dict[str, Any] | None = None  # the provider's usage object, forwarded as is


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request, ready for any provider."""

    request_id: str
    model: Model
    messages: list[dict[str, Any]]  # validated, as the client sent them
    temperature: float  # 0..2; forwarded upstream only where the model accepts it
    temperature_set: bool  # whether the client sent one
    max_completion_tokens: int  # per choice: the client's, or the default / model's maximum
    reasoning_effort: str | None  # resolved (default applied) for reasoning models, else None
    stream: bool  # the client wants SSE
    include_usage: bool  # the client wants the usage chunk (always for /api)
    extra: dict[str, Any] = field(default_factory=dict)  # other OpenAI fields, passed through
    n: int = 1  # choices asked for: each may use max_completion_tokens
    # whether max_completion_tokens is forwarded upstream (False: a /v1 request with no
    # max-tokens field, held at the model's maximum output and sent with no cap)
    max_tokens_set: bool = True


class ChatStream(Protocol):
    usage: Usage | None
    # True for an in-process model: told that the client left (`client_left`), it stops
    # generating and still ends its stream with the exact usage of what it computed. False
    # for an upstream, which is read to its end (or cut off, as configured) instead.
    counts_exactly: bool
    # True when aclose() would do nothing (an upstream read to its end): the relay then
    # skips the task a shielded aclose() costs per request
    closed: bool

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    def client_left(self) -> None:
        """The client hung up; the gateway goes on reading this stream to its end."""

    async def aclose(self) -> None:
        """Stop generating now (client went away); idempotent."""


class ChatProvider(Protocol):
    name: str

    async def open_stream(self, request: ChatRequest) -> ChatStream:
        """Start a generation; raise before returning if it cannot start."""

    async def complete(self, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        """A whole non-streamed `chat.completion` object and its usage."""

    def is_available(self, model: Model) -> bool:
        """Whether this provider can serve the model now (configured, loaded)."""

    async def aclose(self) -> None: ...
