"""The chat gateway: validate, reserve, route, relay, settle.

Hot path per request: one cached key lookup, one write transaction to reserve, the
upstream call relayed as bytes, one write transaction to settle. Settlement runs in a
task of its own so that a client who hangs up mid-stream cannot cancel it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response

from minitoolai.accounts.auth import Principal
from minitoolai.catalog import Model
from minitoolai.chat.pricing import estimate_usage, hold_amount, prompt_token_bound
from minitoolai.chat.providers.base import ChatProvider, ChatRequest, ChatStream, Usage
from minitoolai.chat.validation import validate_chat
from minitoolai.errors import (
    APIError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from minitoolai.ledger.holds import UsageRecord, reserve, settle
from minitoolai.money import usd_number
from minitoolai.observability import exchange
from minitoolai.observability.metrics import UpstreamTimer
from minitoolai.sse import EventStreamResponse

log = logging.getLogger(__name__)

RETRYABLE = (UpstreamError, UpstreamTimeout, ServiceUnavailable)


class ChatService:
    def __init__(self, runtime, providers: dict[str, ChatProvider]) -> None:
        self.runtime = runtime
        self.providers = providers
        self._settings = runtime.settings

    # ---- routing ---------------------------------------------------------------------------
    def routes_for(self, model: Model) -> list[ChatProvider]:
        names = (model.provider, *model.fallback_providers)
        return [p for n in names if (p := self.providers.get(n)) and p.is_available(model)]

    def is_available(self, model: Model) -> bool:
        return bool(self.routes_for(model))

    # ---- the request -------------------------------------------------------------------------
    async def respond(self, principal: Principal, body: Any, *, endpoint: str,
                      openai_style: bool) -> Response:
        settings = self._settings
        request, text_bytes, images = validate_chat(
            body, self.runtime.catalog, openai_style=openai_style,
            default_max_tokens=settings.chat.default_max_completion_tokens)
        # the usage row's id is the response's x-request-id
        request.request_id = exchange.request_id()
        exchange.note_model(request.model.id)
        routes = self.routes_for(request.model)
        if not routes:
            raise ServiceUnavailable(
                f"no provider is configured for the model {request.model.id!r}; the operator"
                f" must configure the {request.model.provider!r} provider",
                param="model", code="no_provider")
        prompt_bound = prompt_token_bound(request, text_bytes, images,
                                          settings.chat.per_message_token_overhead)
        count_exactly = getattr(routes[0], "count_prompt_tokens", None)
        if count_exactly is not None:
            # an in-process model knows its prompt exactly (its template may add a default
            # system prompt that the byte bound does not see)
            prompt_bound = max(prompt_bound, await count_exactly(request))
        amount = hold_amount(request, prompt_bound)
        started = time.monotonic()
        await reserve(self.runtime.db, request_id=request.request_id,
                      account_id=principal.account_id, key_id=principal.key_id, amount=amount,
                      kind="chat", ttl_seconds=settings.hold_ttl_seconds)
        self.runtime.holds.track(request.request_id)
        meter = _Meter(endpoint, request, principal.account_id, prompt_bound, text_bytes,
                       started, amount, images * request.model.image_tokens_max)
        try:
            if request.stream:
                stream = await self._first_route(routes, lambda p: p.open_stream(request))
            else:
                obj, usage = await self._first_route(routes, lambda p: p.complete(request))
        except BaseException as exc:
            # nothing was served: give the whole hold back, whatever stopped us
            self._settle_later(meter, meter.record(None, "error"), 0)
            if isinstance(exc, APIError):
                raise
            if isinstance(exc, Exception):
                log.exception("chat request %s failed", request.request_id)
                raise UpstreamError(f"the request failed: {exc}") from None
            raise
        if request.stream:
            async def abandon() -> None:  # the response was dropped before it began
                self._settle_later(meter, meter.record(None, "cancelled"), 0)
                await stream.aclose()

            return EventStreamResponse(self._relay(stream, request, meter), on_abandon=abandon)
        cost = meter.charge_for(usage)
        if isinstance(obj.get("usage"), dict):
            obj["usage"]["cost"] = usd_number(cost)
        await asyncio.shield(self._settle_later(meter, meter.record(usage, "ok"), cost))
        return Response(orjson.dumps(obj), media_type="application/json")

    async def _first_route(self, routes: list[ChatProvider], call):
        """Try each route in turn; only a failure before the first byte moves on."""
        last: APIError | None = None
        for provider in routes:
            try:
                with UpstreamTimer(provider.name):
                    return await call(provider)
            except RETRYABLE as exc:
                log.warning("provider %s failed before the first byte: %s", provider.name,
                            exc.message)
                last = exc
        assert last is not None
        raise last

    async def _relay(self, stream: ChatStream, request: ChatRequest,
                     meter: _Meter) -> AsyncIterator[bytes]:
        status = "cancelled"  # unless the stream ends or fails
        settled = False
        try:
            async for item in stream:
                usage = stream.usage
                if usage is not None and not settled:
                    # the usage event: the settlement starts before the event is sent (a
                    # client hanging up during that send cannot skip it), and [DONE] waits
                    # for it, so a client that has read [DONE] sees the charge
                    settled = True
                    cost = meter.charge_for(usage)
                    settling = self._settle_later(meter, meter.record(usage, "ok"), cost)
                    if request.include_usage:
                        yield self._with_cost(item, cost)
                    await asyncio.shield(settling)
                    continue
                meter.chunks += item.count(b"data: {")
                yield item
            status = "ok"
        except APIError as exc:
            # headers are gone: tell the client in-band, as OpenAI does, and end the stream
            status = "error"
            exchange.note_error(exc.error_type)
            log.warning("stream %s failed: %s", request.request_id, exc.message)
            yield b"data: " + exc.body() + b"\n\n"
        finally:
            if not settled:
                estimate = meter.estimate()
                cost = meter.charge_for(estimate)
                self._settle_later(meter, meter.record(estimate, status), cost)
            await asyncio.shield(stream.aclose())

    @staticmethod
    def _with_cost(event: bytes, cost: int) -> bytes:
        payload = event.strip()
        try:
            obj = orjson.loads(payload[5:])
            obj["usage"]["cost"] = usd_number(cost)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return event
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    # ---- settlement --------------------------------------------------------------------------
    def _settle_later(self, meter: _Meter, record: UsageRecord, cost: int) -> asyncio.Task:
        """Settle in a task of its own (see HoldKeeper.finish)."""
        exchange.note_usage(record.prompt_tokens, record.completion_tokens, cost)
        request_id = meter.request.request_id
        return self.runtime.holds.finish(request_id, settle(
            self.runtime.db, request_id, cost, record, account_id=meter.account_id))


class _Meter:
    """What the gateway knows of one request, for its usage record."""

    __slots__ = ("endpoint", "request", "account_id", "prompt_bound", "text_bytes", "started",
                 "chunks", "hold", "image_tokens")

    def __init__(self, endpoint: str, request: ChatRequest, account_id: int, prompt_bound: int,
                 text_bytes: int, started: float, hold: int, image_tokens: int) -> None:
        self.account_id = account_id
        self.hold = hold
        self.image_tokens = image_tokens
        self.endpoint = endpoint
        self.request = request
        self.prompt_bound = prompt_bound
        self.text_bytes = text_bytes
        self.started = started
        self.chunks = 0

    def charge_for(self, usage: Usage) -> int:
        """The price of this usage, never more than the hold: what is charged is what the
        client is told (an upstream counting more than the bound is logged, not billed)."""
        cost = self.request.model.chat_cost(usage.prompt_tokens, usage.completion_tokens)
        if cost > self.hold:
            log.error("request %s: usage %d+%d tokens costs %d, over its hold of %d; charging"
                      " the hold", self.request.request_id, usage.prompt_tokens,
                      usage.completion_tokens, cost, self.hold)
            return self.hold
        return cost

    def estimate(self) -> Usage:
        return estimate_usage(self.prompt_bound, self.text_bytes, self.chunks,
                              self.request.max_completion_tokens, self.image_tokens)

    def record(self, usage: Usage | None, status: str) -> UsageRecord:
        if usage is None and status != "error":
            usage = self.estimate()
        latency = int((time.monotonic() - self.started) * 1000)
        return UsageRecord(
            endpoint=self.endpoint, model=self.request.model.id,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            status=status, estimated=bool(usage and usage.estimated), latency_ms=latency)

