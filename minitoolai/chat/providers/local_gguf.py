"""A chat provider that runs a GGUF model inside the server, through llama.cpp.

The model loads once (`start`, in a thread) and stays in memory. Each request is formatted
with the model's own chat template and tokenized with its own tokenizer on the way in (so
errors come before the first byte), then waits its turn in the model's fair queue
(local_queue.py). Tokens become SSE events on the worker thread, pre-rendered from a
per-request byte prefix so the hot path is one small JSON string encode per token; the
stream ends exactly like OpenAI's: a chunk with finish_reason, the usage chunk with
`"choices": []`, then `[DONE]`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from minitoolai.catalog import Model
from minitoolai.chat.local_models import problem
from minitoolai.chat.providers.base import ChatRequest, Usage
from minitoolai.chat.providers.local_engine import (
    Engine,
    Outcome,
    Prepared,
    refuse_unsupported,
    sampling_of,
)
from minitoolai.chat.providers.local_queue import Channel, Job, LocalQueue
from minitoolai.chat.settings import LocalModelSettings
from minitoolai.errors import ConfigError, ServiceUnavailable, UpstreamError

DONE = b"data: [DONE]\n\n"
# above this many characters of messages, templating and tokenizing go to a thread so one
# huge prompt cannot stall the event loop for everybody
INLINE_PREPARE_CHARS = 16_384


def usage_object(outcome: Outcome) -> dict[str, Any]:
    return {
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def completion_id(request_id: str) -> str:
    """OpenAI's shape of a completion's id, from the request's (`req_X` -> `chatcmpl-X`):
    the customer can still tie the answer to its x-request-id and its usage row."""
    if request_id.startswith("chatcmpl-"):
        return request_id
    return "chatcmpl-" + request_id.removeprefix("req_")


class ChunkRenderer:
    """Renders one request's `chat.completion.chunk` events from a fixed byte prefix."""

    def __init__(self, request_id: str, model: str, fingerprint: str) -> None:
        self.created = int(time.time())
        self._common = (b'{"id":' + orjson.dumps(request_id)
                        + b',"object":"chat.completion.chunk","created":'
                        + str(self.created).encode() + b',"model":' + orjson.dumps(model)
                        + b',"service_tier":"default","system_fingerprint":'
                        + orjson.dumps(fingerprint) + b',"choices":')
        self._head = b"data: " + self._common + b'[{"index":0,"delta":{'
        self._started = False

    def content(self, text: str) -> bytes:
        if self._started:
            delta = b'"content":' + orjson.dumps(text)
        else:  # like OpenAI, the first delta names the role
            self._started = True
            delta = b'"role":"assistant","content":' + orjson.dumps(text)
        return (self._head + delta
                + b'},"logprobs":null,"finish_reason":null}],"usage":null}\n\n')

    def finish(self, reason: str) -> bytes:
        opening = b"" if self._started else self.content("")
        return (opening + self._head + b'},"logprobs":null,"finish_reason":'
                + orjson.dumps(reason) + b'}],"usage":null}\n\n')

    def usage(self, usage: dict[str, Any]) -> bytes:
        return b"data: " + self._common + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n"


class LocalStream:
    """A queued or running generation, iterated as SSE bytes."""

    # tokens are counted here, exactly: a client that leaves stops the model (it is shared,
    # one generation at a time) and pays for exactly what it computed
    counts_exactly = True
    closed = False  # aclose() cancels the job, whatever state it is in

    def __init__(self, job: Job, renderer: ChunkRenderer, name: str) -> None:
        self._job = job
        self._renderer = renderer
        self._name = name
        self._client_left = False
        self.usage: Usage | None = None
        # a stream dropped without being read or closed (the response never started: the
        # client left first) must not keep the model generating for nobody
        weakref.finalize(self, job.cancel)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        try:
            while True:
                batch: list[bytes] = []
                for kind, value in await self._job.channel.get_all():
                    if kind == "text":
                        batch.append(value)
                        continue
                    if kind == "error":
                        if batch:
                            yield b"".join(batch)
                        raise _as_api_error(self._name, value)
                    outcome: Outcome = value
                    if outcome.cancelled and not self._client_left:
                        if batch:
                            yield b"".join(batch)
                        raise ServiceUnavailable(f"the local model {self._name!r} stopped"
                                                 " this generation (server shutting down)")
                    batch.append(self._renderer.finish(outcome.finish_reason))
                    yield b"".join(batch)
                    raw = usage_object(outcome)
                    self.usage = Usage(outcome.prompt_tokens, outcome.completion_tokens, raw=raw)
                    yield self._renderer.usage(raw)
                    yield DONE
                    return
                if batch:
                    yield b"".join(batch)
        finally:
            # the reader stopped (client gone, gateway closed us) or we are done: either way
            # the model must not go on generating for nobody
            self._job.cancel()

    def client_left(self) -> None:
        """Stop the model between two tokens (or take the job out of the queue); the stream
        then ends as usual, with the usage of what was computed (prompt included)."""
        self._client_left = True
        self._job.cancel()

    async def aclose(self) -> None:
        self._job.cancel()


def _as_api_error(name: str, exc: BaseException) -> Exception:
    if isinstance(exc, ServiceUnavailable | UpstreamError):
        return exc
    return UpstreamError(f"the local model {name!r} failed: {exc}", code="local_model_failed")


class LocalGGUFProvider:
    """ChatProvider for one GGUF model served in-process."""

    def __init__(self, cfg: LocalModelSettings) -> None:
        self.cfg = cfg
        self.name = f"local:{cfg.id}"
        self.engine = Engine(cfg)
        self._queue: LocalQueue | None = None
        self._starting: asyncio.Lock | None = None
        self._closed = False
        self._failed: str | None = None  # why loading failed, once it has

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model (once, in a thread) and start its worker."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._queue is not None:
                return
            reason = problem(self.cfg)
            if reason:
                raise ConfigError(reason)
            await asyncio.to_thread(self.engine.load)
            queue = LocalQueue(self.engine, self.name, self.cfg.queue_size)
            queue.start()
            self._queue = queue

    async def _load_on_first_use(self) -> None:
        """Models load when first asked for (unless preloaded at start): a server that only
        relays upstream traffic never pays the model's memory."""
        try:
            await self.start()
        except Exception as exc:  # any load failure: this model is out, the server is not
            self._failed = str(exc)
            raise ServiceUnavailable(f"the local model {self.cfg.id!r} could not be loaded:"
                                     f" {exc}", code="model_unavailable") from None

    async def aclose(self) -> None:
        self._closed = True
        queue, self._queue = self._queue, None
        if queue is not None:
            await asyncio.to_thread(queue.close)
        await asyncio.to_thread(self.engine.close)

    def is_available(self, model: Model | None = None) -> bool:
        if self._closed or self._failed is not None:
            return False
        return self._queue is None or not self._queue.closed  # not loaded yet: loads on use

    @property
    def waiting(self) -> int:
        """How many requests wait for the model now (not counting the running one)."""
        return 0 if self._queue is None else self._queue.waiting

    # ---- requests ----------------------------------------------------------------------------
    async def _prepare(self, request: ChatRequest) -> Prepared:
        refuse_unsupported(request.messages, request.extra, request.n)  # before any loading
        if self._queue is None and self.is_available():
            await self._load_on_first_use()
        if not self.is_available():
            raise ServiceUnavailable(f"the local model {self.cfg.id!r} is not loaded",
                                     code="model_unavailable")
        sampling = sampling_of(request.temperature, request.extra)
        size = sum(len(str(m.get("content") or "")) for m in request.messages)
        args = (request.messages, request.max_completion_tokens, sampling)
        if size > INLINE_PREPARE_CHARS:
            return await asyncio.to_thread(self.engine.prepare, *args)
        return self.engine.prepare(*args)

    async def count_prompt_tokens(self, request: ChatRequest) -> int:
        """The exact prompt tokens this request will be charged for (template included).

        For the hold: the gateway's byte-based bound does not know that a chat template adds
        tokens of its own (SmolLM2's adds a default system prompt of ~20 tokens when the
        messages have none), so a short prompt can cost more than that bound. Raises the
        same 400s as `open_stream`, so calling it first also validates before reserving."""
        return len((await self._prepare(request)).tokens)

    def _submit(self, prepared: Prepared, render: Callable[[str], Any]) -> Job:
        job = Job(prepared, Channel(asyncio.get_running_loop()), render)
        queue = self._queue
        if queue is None:
            raise ServiceUnavailable(f"the local model {self.cfg.id!r} is not loaded",
                                     code="model_unavailable")
        queue.submit(job)
        return job

    async def open_stream(self, request: ChatRequest) -> LocalStream:
        prepared = await self._prepare(request)
        renderer = ChunkRenderer(completion_id(request.request_id), request.model.id,
                                 self.engine.fingerprint)
        job = self._submit(prepared, renderer.content)
        return LocalStream(job, renderer, self.name)

    async def complete(self, request: ChatRequest) -> tuple[dict[str, Any], Usage]:
        prepared = await self._prepare(request)
        created = int(time.time())
        job = self._submit(prepared, _identity)
        pieces: list[str] = []
        try:
            while True:
                for kind, value in await job.channel.get_all():
                    if kind == "text":
                        pieces.append(value)
                    elif kind == "error":
                        raise _as_api_error(self.name, value)
                    elif value.cancelled:
                        raise ServiceUnavailable(f"the local model {self.name!r} stopped this"
                                                 " generation (server shutting down)")
                    else:
                        return self._completion(request, created, "".join(pieces), value)
        finally:
            job.cancel()  # a no-op when finished; stops the model if our caller went away

    def _completion(self, request: ChatRequest, created: int, text: str,
                    outcome: Outcome) -> tuple[dict[str, Any], Usage]:
        raw = usage_object(outcome)
        body = {
            "id": completion_id(request.request_id),
            "object": "chat.completion",
            "created": created,
            "model": request.model.id,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None,
                            "annotations": []},
                "logprobs": None,
                "finish_reason": outcome.finish_reason,
            }],
            "usage": raw,
            "service_tier": "default",
            "system_fingerprint": self.engine.fingerprint,
        }
        return body, Usage(outcome.prompt_tokens, outcome.completion_tokens, raw=raw)


def _identity(text: str) -> str:
    return text
