"""Upstreams that speak OpenAI's chat completions protocol: OpenAI, vLLM, llama.cpp server,
Ollama, OpenRouter.

One pool of keep-alive connections per provider (upstream_http.py: a small client on
httptools, cheaper per chunk than aiohttp's). Streams are relayed as bytes: the provider
reads whole SSE events and looks for the one usage event by a byte search, so the hot path
never parses or re-serialises a content chunk.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import orjson

from minitoolai.catalog import Model
from minitoolai.chat.providers.base import ChatRequest, Usage
from minitoolai.chat.providers.upstream_http import UpstreamPool
from minitoolai.chat.providers.upstream_response import UpstreamResponse
from minitoolai.chat.settings import ProviderSettings
from minitoolai.config import OPENAI_DEFAULT_BASE_URL
from minitoolai.errors import (
    APIError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)

# the usage event is the only one whose "usage" is an object; upstreams differ in spacing
# (llama.cpp's server writes `"usage": {`), so a cheap find first, then the pattern
USAGE_KEY = b'"usage"'
SEQUENCE_NUMBER = re.compile(rb'"sequence_number":\s*(\d+)')
USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
EVENT_END = b"\n\n"
DELTA = b'"delta"'
DELTA_OBJECT = re.compile(rb'"delta"\s*:\s*\{(\s*\})?')


def _upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        error = data.get("error") if isinstance(data, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except orjson.JSONDecodeError:
        pass
    return body[:300].decode("utf-8", "replace").strip() or "(empty body)"


def raise_for_upstream_status(provider: str, status: int, body: bytes) -> None:
    """Map an upstream's error status to ours: its 4xx about the request are the client's
    400; its refusal of our credentials or its throttling are the operator's 502/503."""
    message = _upstream_message(body)
    if status in (400, 404, 409, 413, 422):
        raise InvalidRequest(f"the upstream rejected the request: {message}",
                             code="upstream_rejected")
    if status in (401, 403):
        raise UpstreamError(f"upstream {provider!r} refused the server's credentials"
                            f" (HTTP {status}); the operator must fix its API key")
    if status == 429:
        raise ServiceUnavailable(f"upstream {provider!r} is rate limiting this server;"
                                 " retry shortly", code="upstream_rate_limited",
                                 headers={"Retry-After": "5"})
    if status in (408, 504):
        raise UpstreamTimeout(f"upstream {provider!r} timed out (HTTP {status})")
    raise UpstreamError(f"upstream {provider!r} failed with HTTP {status}: {message}")


def usage_from(obj: dict[str, Any] | None) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    prompt, completion = obj.get("prompt_tokens"), obj.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion, raw=obj)


def responses_usage(obj: dict[str, Any] | None) -> Usage | None:
    """A Responses API usage object (input_tokens, output_tokens; reasoning tokens are part
    of output_tokens, cached ones of input_tokens)."""
    if not isinstance(obj, dict):
        return None
    prompt, completion = obj.get("input_tokens"), obj.get("output_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion, raw=obj)


def responses_usage_of(event: dict[str, Any]) -> Usage | None:
    """The usage of a Responses API stream event: the final one (response.completed,
    .incomplete or .failed) carries the whole response, usage included."""
    response = event.get("response")
    return responses_usage(response.get("usage")) if isinstance(response, dict) else None


def chat_usage_of(event: dict[str, Any]) -> Usage | None:
    """The usage of a chat.completion.chunk event (None when it carries none)."""
    return usage_from(event.get("usage"))


def split_usage_event(complete: bytes, usage_of=chat_usage_of
                      ) -> tuple[bytes, bytes, bytes, Usage | None]:
    """Cut the usage event out of a run of whole events: (before, event, after, usage)."""
    start = USAGE_OBJECT.search(complete).start()
    begin = complete.rfind(EVENT_END, 0, start)
    begin = 0 if begin < 0 else begin + 2
    end = complete.find(EVENT_END, start) + 2
    event = complete[begin:end]
    usage = None
    # an event may have an `event:` line before its data line (the Responses API's do)
    data_at = event.find(b"data:")
    if data_at >= 0:
        try:
            usage = usage_of(orjson.loads(event[data_at + 5:].strip()))
        except (orjson.JSONDecodeError, AttributeError):
            usage = None
    if usage is None:  # not a usage event after all (the text contained the mark)
        return complete, b"", b"", None
    return complete[:begin], event, complete[end:], usage


def with_role(complete: bytes) -> tuple[bytes, bool]:
    """Give the first delta of a stream `"role":"assistant"` when the upstream left it out
    (llama.cpp's server and others do; the Node SDK's finalChatCompletion() needs it).
    Returns (events, decided): decided once the first event with a delta has been seen."""
    at = complete.find(DELTA)
    if at < 0:
        return complete, False
    begin = complete.rfind(EVENT_END, 0, at)
    end = complete.find(EVENT_END, at)
    if b'"role"' in complete[begin + 1 if begin >= 0 else 0:end]:
        return complete, True
    match = DELTA_OBJECT.match(complete, at)
    if match is None:
        return complete, True
    role = b'"delta":{"role":"assistant"}' if match.group(1) else b'"delta":{"role":"assistant",'
    return complete[:at] + role + complete[match.end():], True


class UpstreamStream:
    """An open upstream SSE response, iterated as whole events."""

    counts_exactly = False  # the upstream bills what it generates, read or not

    def __init__(self, response: UpstreamResponse, usage_of=chat_usage_of,
                 add_role: bool = True) -> None:
        self._response: UpstreamResponse | None = response
        self._usage_of = usage_of
        self.usage: Usage | None = None
        # where the usage event lies in the item that carries it: the events read with it
        # (the last content, [DONE]) come in the same item, so that the response sends
        # them in one write instead of three (each write to a socket is a system call and
        # a wake-up of the reader)
        self.usage_span: tuple[int, int] | None = None
        self._role_seen = not add_role
        self._last = b""  # the last bytes relayed (numbers an error event of the Responses API)

    def client_left(self) -> None:
        """Nothing to do: the gateway reads on to the usage event (or closes us)."""

    def error_event(self, exc: APIError) -> bytes:
        """The event that ends a stream that broke, in the stream's own API: chat completions
        put OpenAI's error envelope in a data line; the Responses API has a typed `error`
        event, numbered after the last event relayed."""
        if self._usage_of is not responses_usage_of:
            return b"data: " + exc.body() + b"\n\n"
        numbers = SEQUENCE_NUMBER.findall(self._last)
        event = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param,
                 "sequence_number": int(numbers[-1]) + 1 if numbers else 0}
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        pending = b""
        response = self._response
        if response is None:
            return
        while data := await response.read_any():  # raises UpstreamError / UpstreamTimeout
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
            buffer = pending + data if pending else data
            end = buffer.rfind(EVENT_END)
            if end < 0:
                pending = buffer
                continue
            complete, pending = buffer[: end + 2], buffer[end + 2:]
            if not self._role_seen:
                complete, self._role_seen = with_role(complete)
            if (self.usage is None and USAGE_KEY in complete
                    and USAGE_OBJECT.search(complete) is not None):
                before, event, _, usage = split_usage_event(complete, self._usage_of)
                if usage is None:
                    yield complete
                else:
                    # set just before its item: the gateway's signal
                    self.usage_span = (len(before), len(before) + len(event))
                    self.usage = usage
                    yield complete
            else:
                yield complete
            self._last = complete
        # read to its end: the connection goes back to the pool
        self._response = None
        response.release()
        if pending.strip():
            yield pending + EVENT_END

    @property
    def closed(self) -> bool:
        """Read to its end (its connection back in the pool) or closed: `aclose` would do
        nothing."""
        return self._response is None

    async def aclose(self) -> None:
        # closing (not releasing) the response drops the connection, which is what tells
        # the upstream to stop generating; a response read to its end was released already
        response, self._response = self._response, None
        if response is not None:
            response.close()


class OpenAICompatibleProvider:
    """ChatProvider for one configured upstream."""

    def __init__(self, name: str, cfg: ProviderSettings) -> None:
        self.name = name
        self.cfg = cfg
        self._base_url = (cfg.base_url or OPENAI_DEFAULT_BASE_URL).rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if cfg.api_key:
            self._headers["Authorization"] = f"Bearer {cfg.api_key}"
        self._pool: UpstreamPool | None = None

    @property
    def configured(self) -> bool:
        """An upstream counts as configured with a key, or with a non-OpenAI base URL
        (local vLLM, Ollama and llama.cpp servers usually need no key)."""
        return bool(self.cfg.api_key) or (self.cfg.base_url or OPENAI_DEFAULT_BASE_URL) \
            != OPENAI_DEFAULT_BASE_URL

    def is_available(self, model: Model) -> bool:
        return self.configured

    async def start(self) -> None:
        self._pool = UpstreamPool(self.name, self._base_url, self._headers,
                                  connect_timeout=self.cfg.connect_timeout,
                                  read_timeout=self.cfg.read_timeout,
                                  max_connections=self.cfg.max_connections)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    def payload(self, request: ChatRequest, stream: bool) -> bytes:
        model = request.model
        body: dict[str, Any] = {"model": model.upstream_model, "messages": request.messages}
        body.update(request.extra)
        if request.n != 1:
            body["n"] = request.n
        if request.max_tokens_set:  # else: no cap, as the client asked OpenAI for none
            body[self.cfg.max_tokens_field] = request.max_completion_tokens
        if request.temperature_set and model.forwards_temperature(request.reasoning_effort):
            body["temperature"] = request.temperature
        if request.reasoning_effort is not None:
            body["reasoning_effort"] = request.reasoning_effort
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # we bill from it
        return orjson.dumps(body)

    async def _post(self, request: ChatRequest, stream: bool) -> UpstreamResponse:
        return await self._post_to("/chat/completions", self.payload(request, stream))

    async def _post_to(self, path: str, data: bytes) -> UpstreamResponse:
        if self._pool is None:
            raise ServiceUnavailable(f"provider {self.name!r} is not started")
        response = await self._pool.post(path, data)
        if response.status != 200:
            try:
                body = await response.read()
            except APIError:
                body = b""
            finally:
                response.release()
            raise_for_upstream_status(self.name, response.status, body)
        return response

    async def _read_object(self, response: UpstreamResponse) -> dict[str, Any]:
        try:
            body = await response.read()
        finally:
            response.release()
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name!r} answered with invalid JSON") from None
        if not isinstance(obj, dict):
            raise UpstreamError(f"upstream {self.name!r} answered with a non-object")
        return obj

    async def open_stream(self, request: ChatRequest) -> UpstreamStream:
        return UpstreamStream(await self._post(request, stream=True))

    async def complete(self, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        obj = await self._read_object(await self._post(request, stream=False))
        usage = usage_from(obj.get("usage"))
        if usage is None:
            raise UpstreamError(f"upstream {self.name!r} answered without usage")
        return obj, usage

    # ---- the Responses API (POST {base_url}/responses), relayed as is ---------------------------
    async def open_responses_stream(self, payload: bytes) -> UpstreamStream:
        response = await self._post_to("/responses", payload)
        return UpstreamStream(response, usage_of=responses_usage_of, add_role=False)

    async def create_response(self, payload: bytes) -> tuple[dict[str, Any], Usage]:
        obj = await self._read_object(await self._post_to("/responses", payload))
        usage = responses_usage(obj.get("usage"))
        if usage is None:
            raise UpstreamError(f"upstream {self.name!r} answered without usage")
        return obj, usage
