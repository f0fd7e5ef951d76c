"""Validate a chat request against the seed's contract and OpenAI's schema before anything
is reserved (messages: chat/messages.py; forwarded parameters: chat/params.py).

Every refusal names the field (`param`) and says why. The result is a `ChatRequest`
whose fields are exactly what providers need, with defaults applied.
"""

from __future__ import annotations

import secrets
from typing import Any

from minitoolai.catalog import REASONING_EFFORTS, Catalog, Model
from minitoolai.chat.messages import PromptShape, validate_messages
from minitoolai.chat.params import PASSTHROUGH, check_params
from minitoolai.chat.providers.base import ChatRequest
from minitoolai.errors import InvalidRequest, NotFound

MAX_COMPLETION_TOKENS_LIMIT = 200_000
MAX_N = 128

KNOWN = frozenset({"model", "messages", "temperature", "max_completion_tokens", "max_tokens",
                   "reasoning_effort", "stream", "stream_options", "n"}) | PASSTHROUGH


def new_request_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def resolve_model(body: dict, catalog: Catalog) -> Model:
    model_id = body.get("model")
    if model_id is None:
        raise InvalidRequest("'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model_id, str):
        raise InvalidRequest("'model' must be a string", param="model")
    model = catalog.get(model_id)
    if model is None or model.kind != "chat":
        known = ", ".join(m.id for m in catalog.of_kind("chat"))
        raise NotFound(f"the model {model_id!r} does not exist; available chat models: {known}",
                       param="model", code="model_not_found")
    return model


def _number(body: dict, key: str, low: float, high: float, default: float) -> tuple[float, bool]:
    value = body.get(key)
    if value is None:
        return default, False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"'{key}' must be a number between {low:g} and {high:g}", param=key)
    if not low <= value <= high:
        raise InvalidRequest(f"'{key}' must be between {low:g} and {high:g} (got {value})",
                             param=key)
    return float(value), True


def _max_tokens(body: dict) -> int | None:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{key}' must be a positive integer", param=key)
    if value > MAX_COMPLETION_TOKENS_LIMIT:
        raise InvalidRequest(f"'{key}' must be at most {MAX_COMPLETION_TOKENS_LIMIT}", param=key)
    return value


def _reasoning(body: dict, model: Model) -> str | None:
    value = body.get("reasoning_effort")
    if model.reasoning is None:
        if value is not None:
            raise InvalidRequest(f"'reasoning_effort' is only supported by GPT-5 family models,"
                                 f" not {model.id!r}", param="reasoning_effort",
                                 code="unsupported_parameter")
        return None
    allowed, default = REASONING_EFFORTS[model.reasoning]
    if value is None:
        # the Responses-only (codex) models are reasoning-only: OpenAI refuses "none" for
        # them, so without a choice nothing is sent and the upstream's default applies
        return None if model.api == "responses" else default
    if value not in allowed:
        raise InvalidRequest(f"'reasoning_effort' for {model.id} must be one of"
                             f" {', '.join(allowed)} (got {value!r})", param="reasoning_effort")
    return value


def _n(body: dict) -> int:
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidRequest("invalid type for 'n': expected an integer", param="n",
                             code="invalid_type")
    if not 1 <= n <= MAX_N:
        raise InvalidRequest(f"'n' must be between 1 and {MAX_N} (got {n})", param="n")
    return n


def validate_chat(body: Any, catalog: Catalog, *, openai_style: bool,
                  default_max_tokens: int,
                  request_id: str | None = None) -> tuple[ChatRequest, PromptShape]:
    """Return the ChatRequest and the shape of its prompt, for the hold's bound.
    `request_id`: the request's (the exchange's) id; a new one if None.

    With no max-tokens field, /api uses `default_max_tokens` (the seed's 1000, forwarded);
    /v1 sets no cap, as OpenAI does, and holds the model's maximum output."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = [k for k in body if k not in KNOWN]
    if unknown:
        raise InvalidRequest(f"unknown parameter {unknown[0]!r}", param=unknown[0],
                             code="unknown_parameter")
    model = resolve_model(body, catalog)
    shape = validate_messages(body.get("messages"), model)
    temperature, temperature_set = _number(body, "temperature", 0.0, 2.0, 1.0)
    max_tokens = _max_tokens(body)
    max_tokens_set = max_tokens is not None or not openai_style
    if max_tokens is None:
        max_tokens = model.max_output_tokens if openai_style else default_max_tokens
    effort = _reasoning(body, model)
    n = _n(body)
    stream = body.get("stream")
    if stream is None:
        stream = not openai_style  # the seed's examples read a stream; OpenAI's default is off
    elif not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None:
        if not stream:  # as OpenAI answers it
            raise InvalidRequest("the 'stream_options' parameter is only allowed when"
                                 " 'stream' is enabled", param="stream_options",
                                 code="invalid_value")
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        if options.get("include_usage") is not None \
                and not isinstance(options["include_usage"], bool):
            raise InvalidRequest("'stream_options.include_usage' must be true or false",
                                 param="stream_options.include_usage", code="invalid_type")
    include_usage = bool((options or {}).get("include_usage", False)) if openai_style else True
    extra = check_params(body)
    request = ChatRequest(
        request_id=request_id or new_request_id(), model=model, messages=body["messages"],
        temperature=temperature, temperature_set=temperature_set,
        max_completion_tokens=max_tokens, reasoning_effort=effort, stream=stream,
        include_usage=include_usage, extra=extra, n=n, max_tokens_set=max_tokens_set,
    )
    return request, shape
