"""The chat gateway: validate, reserve, route, relay, settle.

Hot path per request: one cached key lookup, one write transaction to reserve, the
upstream call relayed as bytes, one write transaction to settle. Settlement runs in a
task of its own so that a client who hangs up mid-stream cannot cancel it.

A client that hangs up mid-stream does not change the price. By default the relay goes
on reading the upstream (sending nothing) to its usage event, for up to
`chat.drain_after_disconnect_seconds`, and settles with the upstream's own counts, hidden
reasoning tokens included. With `chat.cancel_upstream_on_disconnect`, or when that time
runs out, the gateway cuts the upstream off, which may still bill the whole request: the
charge is then the hold. An in-process model stops instead and reports exactly what it
computed. Only a stream that ends without usage for another reason (the upstream broke
off, the server is shutting down) is charged an estimate (chat/pricing.py).
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
from minitoolai.chat import responses_bridge
from minitoolai.chat.params import check_service_tier
from minitoolai.chat.pricing import (
    KEEP_SENT_BYTES,
    estimate_usage,
    hold_amount,
    hold_usage,
    prompt_token_bound,
)
from minitoolai.chat.providers.base import ChatProvider, ChatRequest, ChatStream, Usage
from minitoolai.chat.validation import validate_chat
from minitoolai.errors import (
    APIError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from minitoolai.ledger.holds import REFUSALS, UsageRecord
from minitoolai.money import usd_number
from minitoolai.observability import exchange, metrics
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
        # the usage row's id is the response's x-request-id
        request, shape = validate_chat(
            body, self.runtime.catalog, openai_style=openai_style,
            default_max_tokens=settings.chat.default_max_completion_tokens,
            request_id=exchange.request_id())
        exchange.note_model(request.model.id)
        if "service_tier" in request.extra:
            check_service_tier(request.extra["service_tier"], settings.chat.service_tiers)
        routes = self.routes_for(request.model)
        if not routes:
            # imported here: the catalog's status module imports this one (cold path)
            from minitoolai.catalog_status import unavailable_reason

            raise ServiceUnavailable(
                f"the model {request.model.id!r} is not available on this server:"
                f" {unavailable_reason(self.runtime, request.model)}",
                param="model", code="no_provider")
        prompt_bound = prompt_token_bound(request, shape,
                                          settings.chat.per_message_token_overhead)
        count_exactly = getattr(routes[0], "count_prompt_tokens", None)
        prompt_exact = None
        if count_exactly is not None:
            # an in-process model knows its prompt exactly (its template may add a default
            # system prompt that the byte bound does not see)
            prompt_exact = await count_exactly(request)
            prompt_bound = max(prompt_bound, prompt_exact)
        image_tokens = (shape.images * request.model.image_tokens_max
                        + shape.files * request.model.file_tokens_max)
        if request.model.api == "responses":
            return await responses_bridge.serve(self, principal, request, endpoint,
                                                prompt_bound, image_tokens, routes)
        return await self.serve(principal, request, endpoint, prompt_bound, prompt_exact,
                                image_tokens, routes, lambda p: p.open_stream(request),
                                lambda p: p.complete(request))

    async def serve(self, principal: Principal, request: ChatRequest, endpoint: str,
                    prompt_bound: int, prompt_exact: int | None, image_tokens: int,
                    routes: list[ChatProvider], open_stream, complete) -> Response:
        """Hold, call the first route that answers, relay, settle (chat completions and
        the Responses API alike: `open_stream` / `complete` call a provider).
        `prompt_exact`: the prompt's tokens when an in-process model counted them."""
        amount = hold_amount(request, prompt_bound)
        started = time.monotonic()
        meter = _Meter(endpoint, request, principal.account_id, prompt_bound, prompt_exact,
                       started, amount, image_tokens)
        try:
            # from this process's credit lease when leases are on (ledger/leases.py), else
            # a hold row, tracked so that it is renewed while the work lasts
            await self.runtime.holds.reserve(request_id=request.request_id,
                                             account_id=principal.account_id,
                                             key_id=principal.key_id, amount=amount,
                                             kind="chat", model=request.model.id)
        except REFUSALS:
            raise  # refused (credit, the key's limits, expiry, models): nothing was written
        except BaseException:
            # the database went away under the hold's COMMIT, which may have landed with
            # its answer lost (db/pg_ledger.py), or the client left meanwhile (the hold
            # commits regardless): released (by its id, the request's), at once or in the
            # background while the database is away (ledger/undo.py)
            self.runtime.holds.settle(request.request_id, 0, meter.record(None, "error"),
                                      account_id=principal.account_id)
            raise
        metrics.RESERVE_SECONDS.observe(time.monotonic() - started)
        try:
            if request.stream:
                stream = await self._first_route(routes, open_stream)
            else:
                obj, usage = await self._first_route(routes, complete)
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
            return self._stream_response(stream, request, meter)
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

    def _stream_response(self, stream: ChatStream, request: ChatRequest,
                         meter: _Meter) -> EventStreamResponse:
        chat = self._settings.chat
        # how long the response goes on reading after a hang-up; None: stop at once
        linger = (None if chat.cancel_upstream_on_disconnect and not stream.counts_exactly
                  else chat.drain_after_disconnect_seconds)

        def on_disconnect() -> None:
            meter.client_gone = True
            stream.client_left()

        async def abandon() -> None:  # the response was dropped before it began
            on_disconnect()
            if linger is None:
                await stream.aclose()
                self._settle_later(meter, meter.record(meter.hold_usage(), "cancelled"),
                                   meter.hold)
                return
            # nobody will iterate the relay: read the stream to its end here instead
            self.runtime.holds.finish(request.request_id,
                                      _drain(self._relay(stream, request, meter), linger))

        return EventStreamResponse(self._relay(stream, request, meter), on_abandon=abandon,
                                   on_disconnect=on_disconnect, linger=linger)

    async def _relay(self, stream: ChatStream, request: ChatRequest,
                     meter: _Meter) -> AsyncIterator[bytes]:
        status = "cancelled"  # unless the stream ends or fails
        settled = False
        relay_started = time.monotonic()
        try:
            async for item in stream:
                usage = stream.usage
                if usage is not None and not settled:
                    # the usage event: settled before it is sent, so a client that reads a
                    # cost has been charged it
                    settled = True
                    cost = meter.charge_for(usage)
                    # the cost goes out once the charge is in the database or, if that
                    # fails, in the settlement journal (HoldKeeper.settle); shielded, so a
                    # client hanging up meanwhile cannot skip it
                    await asyncio.shield(self._settle_later(
                        meter, meter.record(usage, "cancelled" if meter.client_gone else "ok"),
                        cost))
                    # the item may hold the events read with the usage event around it
                    begin, end = getattr(stream, "usage_span", None) or (0, len(item))
                    event = self._with_cost(item[begin:end], cost) \
                        if request.include_usage else b""
                    if begin or end < len(item):
                        event = item[:begin] + event + item[end:]
                    if event:
                        yield event
                    continue
                # kept (not copied) for an estimate, should the usage never come
                if meter.kept < KEEP_SENT_BYTES:
                    meter.sent.append(item)
                    meter.kept += len(item)
                else:
                    meter.more_events += item.count(b"data: {")
                yield item
            status = "ok"
        except APIError as exc:
            # headers are gone: tell the client in-band, as OpenAI does, and end the stream
            status = "error"
            exchange.note_error(exc.error_type)
            log.warning("stream %s failed: %s", request.request_id, exc.message)
            error_event = getattr(stream, "error_event", None)
            yield error_event(exc) if error_event else b"data: " + exc.body() + b"\n\n"
        finally:
            if not settled:
                if status == "cancelled" and meter.client_gone:
                    # the gateway cut the upstream off after the client left (as configured,
                    # or the drain ran out of time): the upstream may bill it all
                    self._settle_later(meter, meter.record(meter.hold_usage(), status),
                                       meter.hold)
                else:
                    self.runtime.holds.finish(request.request_id,
                                              self._settle_estimate(meter, status))
            if not stream.closed:
                await asyncio.shield(stream.aclose())
            metrics.RELAY_SECONDS.observe(time.monotonic() - relay_started)

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
        """Settle in a task of its own, journaled if the database refuses it (see
        HoldKeeper.settle)."""
        exchange.note_usage(record.prompt_tokens, record.completion_tokens, cost)
        return self.runtime.holds.settle(meter.request.request_id, cost, record,
                                         account_id=meter.account_id)

    async def _settle_estimate(self, meter: _Meter, status: str) -> None:
        """Settle a stream that ended without usage at an estimate (run via holds.finish:
        tokenizing, and loading the tokenizer the first time, happen in a thread),
        journaled if the database refuses it, like every other settlement."""
        usage = await asyncio.to_thread(meter.estimate)
        cost, record = meter.charge_for(usage), meter.record(usage, status)
        exchange.note_usage(record.prompt_tokens, record.completion_tokens, cost)
        await self.runtime.holds.settle_or_journal(meter.request.request_id, cost, record,
                                                   account_id=meter.account_id)


async def _drain(relay: AsyncIterator[bytes], seconds: float) -> None:
    """Read a relay nobody sends anywhere to its end (it settles itself), for so long."""
    try:
        async with asyncio.timeout(seconds):
            async for _ in relay:
                pass
    except TimeoutError:
        pass  # the relay was cancelled inside: it charged the hold


class _Meter:
    """What the gateway knows of one request, for its usage record."""

    __slots__ = ("account_id", "client_gone", "endpoint", "hold", "image_tokens", "kept",
                 "more_events", "prompt_bound", "prompt_exact", "request", "sent", "started")

    def __init__(self, endpoint: str, request: ChatRequest, account_id: int, prompt_bound: int,
                 prompt_exact: int | None, started: float, hold: int,
                 image_tokens: int) -> None:
        self.account_id = account_id
        self.hold = hold
        self.image_tokens = image_tokens
        self.endpoint = endpoint
        self.request = request
        self.prompt_bound = prompt_bound
        self.prompt_exact = prompt_exact
        self.started = started
        self.sent: list[bytes] = []  # what was relayed, up to KEEP_SENT_BYTES
        self.kept = 0
        self.more_events = 0  # events relayed past that
        self.client_gone = False

    def charge_for(self, usage: Usage) -> int:
        """The price of this usage, never more than the hold: what is charged is what the
        client is told (an upstream counting more than the bound is logged, not billed)."""
        cost = self.request.model.chat_cost(usage.prompt_tokens, usage.completion_tokens)
        if cost > self.hold:
            log.error("request %s: usage %d+%d tokens costs %d, over its hold of %d; charging"
                      " the hold", self.request.request_id, usage.prompt_tokens,
                      usage.completion_tokens, cost, self.hold)
            metrics.CAPPED.labels(self.request.model.id).inc()
            return self.hold
        return cost

    def estimate(self) -> Usage:
        """Blocking (the tokenizer): call it in a thread."""
        return estimate_usage(self.request, self.prompt_bound, self.prompt_exact,
                              self.image_tokens, self.sent, self.more_events)

    def hold_usage(self) -> Usage:
        return hold_usage(self.request, self.prompt_bound)

    def record(self, usage: Usage | None, status: str) -> UsageRecord:
        latency = int((time.monotonic() - self.started) * 1000)
        return UsageRecord(
            endpoint=self.endpoint, model=self.request.model.id,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            status=status, estimated=bool(usage and usage.estimated), latency_ms=latency)
