"""`POST /v1/responses`: OpenAI's Responses API, relayed to the OpenAI-compatible upstream of
the model (streamed events as bytes, or the whole response), held and settled as chat is,
charged from the response's usage (input and output tokens; reasoning tokens are output
tokens, cached ones input tokens, priced as the model's input).

The hold must stay an upper bound, so what the gateway cannot bound is refused with a 400:
state kept by the upstream (`previous_response_id`, `conversation`, a stored `prompt`,
`item_reference` items, `background`), and built-in tools billed apart from tokens (web or
file search, code interpreter...; `function` and `custom` tools are accepted). The body is
otherwise forwarded as sent (the model's name mapped to the upstream's), so every field the
upstream knows works. Models served in-process answer chat completions only.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from minitoolai.catalog import Model
from minitoolai.chat.params import check_service_tier, check_tools
from minitoolai.chat.pricing import (
    BASE_OVERHEAD_TOKENS,
    PER_TOOL_OVERHEAD_TOKENS,
    TOOLS_OVERHEAD_TOKENS,
)
from minitoolai.chat.providers.base import ChatRequest
from minitoolai.chat.validation import MAX_COMPLETION_TOKENS_LIMIT, resolve_model
from minitoolai.errors import InvalidRequest, ServiceUnavailable
from minitoolai.observability import exchange

ENDPOINT = "/v1/responses"
STATEFUL = ("previous_response_id", "conversation", "prompt", "background")


def _refuse(message: str, param: str, code: str = "unsupported_parameter") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


# parts that cost an image's or a file's tokens wherever they are in an item: a message's
# content, a tool call's output (function_call_output and custom_tool_call_output take
# arrays of input parts), a computer call's screenshot
IMAGE_PARTS = frozenset({"input_image", "computer_screenshot"})
FILE_PARTS = frozenset({"input_file"})


def _typed_parts(item: Any, where: str):
    """(path, type) of every object under `item` (itself included) whose type is an image
    or a file part. Depth-first; the body's nesting is bounded before this runs."""
    stack = [(item, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            kind = value.get("type")
            # a malformed "type" (a list, an object) is not ours to judge: the upstream is
            if isinstance(kind, str) and (kind in IMAGE_PARTS or kind in FILE_PARTS):
                yield path, kind
            stack.extend((child, f"{path}.{key}") for key, child in value.items()
                         if isinstance(child, (dict, list)))
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{j}]") for j, child in enumerate(value)
                         if isinstance(child, (dict, list)))


def _input_shape(items: Any, model: Model) -> tuple[int, int, int]:
    """(items, image parts, file parts) of `input`, refusing what cannot be bounded."""
    if isinstance(items, str):
        return 1, 0, 0
    if not isinstance(items, list) or not items:
        raise InvalidRequest("'input' must be a string or a non-empty array of items",
                             param="input", code="invalid_type")
    images = files = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an object", param=f"input[{i}]",
                                 code="invalid_type")
        if item.get("type") == "item_reference":
            raise _refuse(f"input[{i}]: item references (items stored by the upstream) are"
                          " not supported: send the items themselves", f"input[{i}]")
        # every part is held at its model's bound, wherever it is: a tool's output priced
        # by its bytes alone would let an image or a file cost more than the hold
        for path, kind in _typed_parts(item, f"input[{i}]"):
            if kind in IMAGE_PARTS:
                if not model.vision:
                    raise _refuse(f"{path}: the model {model.id!r} does not accept image"
                                  " input", path, "image_input_not_supported")
                images += 1
            else:
                if not model.file_tokens_max:
                    raise _refuse(f"{path}: the model {model.id!r} does not accept file"
                                  " input", path, "file_input_not_supported")
                files += 1
    return len(items), images, files


def _max_output_tokens(body: dict, model: Model) -> tuple[int, bool]:
    value = body.get("max_output_tokens")
    if value is None:
        return model.max_output_tokens, False
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest("'max_output_tokens' must be a positive integer",
                             param="max_output_tokens", code="invalid_type")
    if value > MAX_COMPLETION_TOKENS_LIMIT:
        raise InvalidRequest(f"'max_output_tokens' must be at most"
                             f" {MAX_COMPLETION_TOKENS_LIMIT}", param="max_output_tokens")
    return value, True


def validate_response_request(body: Any, catalog, per_item_overhead: int
                              ) -> tuple[ChatRequest, int, int, int]:
    """Return (the request, its prompt token bound, its text bytes, its image tokens)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = resolve_model(body, catalog)
    if body.get("input") is None:
        raise InvalidRequest("'input' is required", param="input",
                             code="missing_required_parameter")
    for key in STATEFUL:
        if body.get(key) not in (None, False):
            raise _refuse(f"'{key}' is not supported: this server must bound each request's"
                          " cost, so the whole conversation is sent with every request", key)
    items, images, files = _input_shape(body["input"], model)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("'instructions' must be a string", param="instructions",
                             code="invalid_type")
    tools = body.get("tools")
    if tools is not None:
        # the Responses API's function tools are flat: {"type", "name", "parameters", ...}
        if not isinstance(tools, list):
            raise InvalidRequest("'tools' must be an array", param="tools",
                                 code="invalid_type")
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in ("function", "custom"):
                raise _refuse(f"tools[{i}]: only function and custom tools are supported"
                              f" (got {kind!r}); built-in tools are billed apart from tokens",
                              f"tools[{i}].type")
            if kind == "function":
                check_tools([{"type": "function", "function": tool}], "tools")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream",
                             code="invalid_type")
    max_output, max_set = _max_output_tokens(body, model)
    text_bytes = len(orjson.dumps(body))
    prompt_bound = (text_bytes + BASE_OVERHEAD_TOKENS + per_item_overhead * items
                    + images * model.image_tokens_max + files * model.file_tokens_max)
    if tools:
        prompt_bound += TOOLS_OVERHEAD_TOKENS + PER_TOOL_OVERHEAD_TOKENS * len(tools)
    # never forwarded (the body is relayed as sent): what an estimate counts, should the
    # upstream break off before its usage (the input and instructions as text)
    counted = [{"role": "user", "content": orjson.dumps(
        {k: body[k] for k in ("instructions", "input") if body.get(k) is not None}).decode()}]
    request = ChatRequest(
        request_id="resp-" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y"),
        model=model, messages=counted, temperature=1.0, temperature_set=False,
        max_completion_tokens=max_output, reasoning_effort=None, stream=stream,
        include_usage=True, max_tokens_set=max_set)
    image_tokens = images * model.image_tokens_max + files * model.file_tokens_max
    return request, prompt_bound, image_tokens


async def respond(service, principal, body: Any):
    """Validate, hold, relay to the model's upstream, settle from the response's usage."""
    settings = service.runtime.settings
    request, prompt_bound, image_tokens = validate_response_request(
        body, service.runtime.catalog, settings.chat.per_message_token_overhead)
    check_service_tier(body.get("service_tier"), settings.chat.service_tiers)
    # the usage row's id is the response's x-request-id, as for chat completions
    request.request_id = exchange.request_id()
    model = request.model
    exchange.note_model(model.id)
    routes = service.routes_for(model)
    relays = [p for p in routes if hasattr(p, "create_response")]
    if not relays:
        if routes:
            raise _refuse(f"the model {model.id!r} runs on this server and answers chat"
                          " completions only (POST /v1/chat/completions)", "model")
        raise ServiceUnavailable(f"no provider is configured for the model {model.id!r}",
                                 param="model", code="no_provider")
    payload = orjson.dumps({**body, "model": model.upstream_model})
    return await service.serve(principal, request, ENDPOINT, prompt_bound, None,
                               image_tokens, relays,
                               lambda p: p.open_responses_stream(payload),
                               lambda p: p.create_response(payload))
