"""Chat completions for models served on OpenAI's Responses API only (the catalog's
`api: "responses"`, e.g. the codex models): the chat request is translated to a Responses
request (`POST {base_url}/responses`) and the answer back to chat completion chunks in the
seed's shape, or to a whole `chat.completion`. Holds, routing and settlement are the chat
gateway's own (ChatService.serve); the price comes from the response's usage.

Unlike the byte relay of chat upstreams, every event is parsed here: the two protocols
differ in every event, so there is nothing to pass through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from minitoolai.chat.providers.base import ChatRequest, Usage
from minitoolai.errors import InvalidRequest, UpstreamError

DONE = b"data: [DONE]\n\n"
# chat fields with the same meaning on the Responses API
SAME_FIELDS = ("top_p", "parallel_tool_calls", "metadata", "user", "service_tier",
               "prompt_cache_key", "safety_identifier")
FINISH_OF_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


# ---- request ----------------------------------------------------------------------------------
def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _user_content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif kind == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"),
                          "detail": image.get("detail") or "auto"})
        elif kind == "file":
            file = part.get("file") or {}
            parts.append({"type": "input_file", **{k: v for k, v in file.items()
                                                  if k in ("file_data", "file_id", "filename")}})
        else:
            raise InvalidRequest(f"content parts of type {kind!r} are not supported for this"
                                 " model", param="messages", code="unsupported_content")
    return parts


def input_items(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            items.append({"role": "developer", "content": _text(message.get("content"))})
        elif role == "user":
            items.append({"role": "user", "content": _user_content(message.get("content"))})
        elif role == "assistant":
            text = _text(message.get("content"))
            if text:
                items.append({"role": "assistant", "content": text})
            for call in message.get("tool_calls") or ():
                function = call.get("function") or {}
                items.append({"type": "function_call", "call_id": call.get("id"),
                              "name": function.get("name"),
                              "arguments": function.get("arguments") or ""})
        elif role == "tool":
            items.append({"type": "function_call_output",
                          "call_id": message.get("tool_call_id"),
                          "output": _text(message.get("content"))})
        else:
            raise InvalidRequest(f"messages with role {role!r} are not supported for this"
                                 " model", param="messages", code="unsupported_role")
    return items


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    flat = []
    for tool in tools:
        if tool.get("type") != "function":
            raise InvalidRequest("only function tools are supported for this model",
                                 param="tools", code="unsupported_tool")
        flat.append({"type": "function", **tool.get("function", {})})
    return flat


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "name": (choice.get("function") or {}).get("name")}
    return choice


def _text_format(response_format: dict[str, Any]) -> dict[str, Any]:
    kind = response_format.get("type")
    if kind == "json_schema":
        return {"type": "json_schema", **(response_format.get("json_schema") or {})}
    return {"type": kind}


def payload(request: ChatRequest, stream: bool) -> bytes:
    """The Responses API body for a validated chat request."""
    model = request.model
    body: dict[str, Any] = {"model": model.upstream_model,
                            "input": input_items(request.messages), "store": False}
    extra = request.extra
    for key in SAME_FIELDS:
        if key in extra:
            body[key] = extra[key]
    if extra.get("tools"):
        body["tools"] = _tools(extra["tools"])
    if "tool_choice" in extra:
        body["tool_choice"] = _tool_choice(extra["tool_choice"])
    if isinstance(extra.get("response_format"), dict):
        body["text"] = {"format": _text_format(extra["response_format"])}
    if request.max_tokens_set:
        body["max_output_tokens"] = request.max_completion_tokens
    if request.temperature_set and model.forwards_temperature(request.reasoning_effort):
        body["temperature"] = request.temperature
    if request.reasoning_effort is not None:
        body["reasoning"] = {"effort": request.reasoning_effort}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


# ---- answer -----------------------------------------------------------------------------------
def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    reasoning = (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": usage.get("total_tokens", prompt + completion),
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _usage(response: dict[str, Any]) -> Usage | None:
    usage = response.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int) \
            or not isinstance(usage.get("output_tokens"), int):
        return None
    raw = chat_usage(usage)
    return Usage(raw["prompt_tokens"], raw["completion_tokens"], raw=raw)


def _finish_reason(response: dict[str, Any], tool_calls: bool) -> str:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return FINISH_OF_INCOMPLETE.get(reason, "length")
    return "tool_calls" if tool_calls else "stop"


def _chat_id(response_id: str | None) -> str:
    return "chatcmpl-" + (response_id or "")[5:] if response_id else "chatcmpl-"


def completion(response: dict[str, Any], model_id: str) -> tuple[dict[str, Any], Usage]:
    """A whole `chat.completion` from a whole Responses API response."""
    usage = _usage(response)
    if usage is None:
        raise UpstreamError("the upstream answered without usage")
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in response.get("output") or ():
        if item.get("type") == "message":
            text.extend(p.get("text", "") for p in item.get("content") or ()
                        if p.get("type") == "output_text")
        elif item.get("type") == "function_call":
            calls.append({"id": item.get("call_id"), "type": "function",
                          "function": {"name": item.get("name"),
                                       "arguments": item.get("arguments", "")}})
    message: dict[str, Any] = {"role": "assistant",
                               "content": "".join(text) if text or not calls else None,
                               "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    obj = {"id": _chat_id(response.get("id")), "object": "chat.completion",
           "created": response.get("created_at"), "model": response.get("model") or model_id,
           "service_tier": response.get("service_tier") or "default",
           "system_fingerprint": None,
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(response, bool(calls))}],
           "usage": dict(usage.raw)}
    return obj, usage


class BridgeStream:
    """A Responses API event stream read as chat completion chunks (the ChatStream
    interface: `usage` is set just before the usage chunk, yielded alone)."""

    counts_exactly = False  # an upstream: it bills what it generates, read or not

    def __init__(self, upstream, model_id: str) -> None:
        self._upstream = upstream
        self.usage: Usage | None = None
        self._usage: Usage | None = None
        # the seed's chunk keys, in its order (no fingerprint comes from the Responses API)
        self._head = {"id": "chatcmpl-", "object": "chat.completion.chunk", "created": 0,
                      "model": model_id, "service_tier": "default",
                      "system_fingerprint": None}
        self._role_sent = False
        self._tools: dict[int, int] = {}  # output_index -> tool_calls index

    def client_left(self) -> None:
        self._upstream.client_left()

    @property
    def closed(self) -> bool:
        return self._upstream.closed

    async def aclose(self) -> None:
        await self._upstream.aclose()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        obj = {**self._head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish}], "usage": None}
        return b"data: " + orjson.dumps(obj) + b"\n\n"

    async def _events(self) -> AsyncIterator[bytes]:
        async for item in self._upstream:
            out = b""
            for block in item.split(b"\n\n"):
                at = block.find(b"data:")
                if at < 0:
                    continue
                try:
                    event = orjson.loads(block[at + 5:].strip())
                except orjson.JSONDecodeError:
                    continue
                chunk, usage_chunk = self._translate(event)
                out += chunk
                if usage_chunk is not None:
                    if out:
                        yield out
                        out = b""
                    self.usage = self._usage  # set just before its chunk: the gateway's signal
                    yield usage_chunk
                    yield DONE
                    return
            if out:
                yield out

    def _translate(self, event: dict[str, Any]) -> tuple[bytes, bytes | None]:
        kind = event.get("type", "")
        if kind in ("response.created", "response.in_progress"):
            response = event.get("response") or {}
            self._head["id"] = _chat_id(response.get("id"))
            self._head["created"] = response.get("created_at") or 0
            self._head["model"] = response.get("model") or self._head["model"]
            self._head["service_tier"] = response.get("service_tier") or "default"
        elif kind == "response.output_text.delta":
            return self._chunk({"content": event.get("delta", "")}), None
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                index = self._tools[event.get("output_index", 0)] = len(self._tools)
                return self._chunk({"tool_calls": [{
                    "index": index, "id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": ""}}]}), None
        elif kind == "response.function_call_arguments.delta":
            index = self._tools.get(event.get("output_index", 0), 0)
            return self._chunk({"tool_calls": [{
                "index": index, "function": {"arguments": event.get("delta", "")}}]}), None
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            response = event.get("response") or {}
            usage = _usage(response)
            if kind == "response.failed" or usage is None:
                error = response.get("error") or {}
                raise UpstreamError("the upstream failed the response: "
                                    f"{error.get('message') or kind}")
            finish = self._chunk({}, _finish_reason(response, bool(self._tools)))
            self._usage = usage
            obj = {**self._head, "choices": [], "usage": usage.raw}
            return finish, b"data: " + orjson.dumps(obj) + b"\n\n"
        elif kind == "error":
            raise UpstreamError(f"the upstream failed the response: {event.get('message')}")
        return b"", None


def relays(routes: list) -> list:
    """The routes that can reach a Responses API (OpenAI-compatible upstreams)."""
    return [p for p in routes if hasattr(p, "open_responses_stream")]


async def serve(service, principal, request: ChatRequest, endpoint: str, prompt_bound: int,
                image_tokens: int, routes: list):
    """Serve a chat request of a Responses-only model through ChatService.serve."""
    if request.n != 1:  # refused before the hold: the Responses API has no `n`
        raise InvalidRequest(f"the model {request.model.id!r} answers one choice only (n=1)",
                             param="n", code="unsupported_parameter")
    routes = relays(routes)
    if not routes:
        raise InvalidRequest(f"the model {request.model.id!r} needs an OpenAI-compatible"
                             " upstream (Responses API)", param="model", code="no_provider")
    model_id = request.model.id

    async def open_stream(provider):
        upstream = await provider.open_responses_stream(payload(request, stream=True))
        return BridgeStream(upstream, model_id)

    async def complete(provider):
        obj, _ = await provider.create_response(payload(request, stream=False))
        return completion(obj, model_id)

    return await service.serve(principal, request, endpoint, prompt_bound, None, image_tokens,
                               routes, open_stream, complete)
