"""Validate a chat request against the seed's contract before anything is reserved.

Every refusal names the field (`param`) and says why. The result is a `ChatRequest`
whose fields are exactly what providers need, with defaults applied.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import orjson

from minitoolai.catalog import REASONING_EFFORTS, Catalog, Model
from minitoolai.chat.passthrough import check_forwarded
from minitoolai.chat.providers.base import ChatRequest
from minitoolai.errors import InvalidRequest, NotFound

ROLES = ("developer", "system", "user", "assistant")
DETAILS = ("auto", "high", "low")
IMAGE_TYPES = ("jpg", "jpeg", "png", "webp", "gif")
UNSUPPORTED_IMAGE_TYPES = ("bmp", "svg", "tif", "tiff", "heic", "heif", "avif", "ico", "pdf")
MAX_COMPLETION_TOKENS_LIMIT = 200_000
_DATA_URL = re.compile(r"^data:image/(jpeg|jpg|png|webp|gif);base64,[A-Za-z0-9+/=\s]+$", re.I)
_URL_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")

# OpenAI parameters forwarded to upstreams as given (the local model uses what it can)
PASSTHROUGH = frozenset({
    "top_p", "stop", "presence_penalty", "frequency_penalty", "seed", "user",
    "response_format", "logit_bias", "tools", "tool_choice", "parallel_tool_calls",
    "metadata", "store", "verbosity", "prompt_cache_key", "safety_identifier",
})
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


def _check_image_url(part: dict, where: str) -> None:
    image = part.get("image_url")
    if isinstance(image, str):  # tolerated shorthand: {"type": "image_url", "image_url": "..."}
        image = {"url": image}
    if not isinstance(image, dict):
        raise InvalidRequest(f"{where}.image_url must be an object with a 'url'",
                             param=f"{where}.image_url")
    url = image.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.image_url.url is required", param=f"{where}.image_url.url")
    if url.startswith("data:"):
        if not _DATA_URL.match(url):
            raise InvalidRequest(
                f"{where}.image_url.url: a data URL must be data:image/<jpeg|jpg|png|webp|gif>;"
                "base64,<data>", param=f"{where}.image_url.url", code="invalid_image_url")
    elif url.startswith(("http://", "https://")):
        # URLs often have no extension (CDNs); refuse only an extension that names an image
        # type the models do not read
        last = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
        ext = _URL_EXT.search(last)
        if ext and ext.group(1).lower() in UNSUPPORTED_IMAGE_TYPES:
            raise InvalidRequest(
                f"{where}.image_url.url: unsupported image type '.{ext.group(1)}'; use jpg,"
                " jpeg, png, webp or gif", param=f"{where}.image_url.url",
                code="invalid_image_format")
    else:
        raise InvalidRequest(f"{where}.image_url.url must be an http(s) URL or a data URL",
                             param=f"{where}.image_url.url", code="invalid_image_url")
    detail = image.get("detail", "auto")
    if detail is not None and detail not in DETAILS:
        raise InvalidRequest(f"{where}.image_url.detail must be one of auto, high, low",
                             param=f"{where}.image_url.detail")


def validate_messages(messages: Any, model: Model) -> tuple[int, int]:
    """Check every message; return (a bound of its bytes, number of image parts).

    The bound is each whole message as JSON, so every field an upstream may be sent and
    bill (content, names, tool calls, anything else) is counted; only the image URLs are
    left out, since each image part has its own token bound."""
    if messages is None:
        raise InvalidRequest("'messages' is required", param="messages",
                             code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    message_bytes = image_bytes = 0
    images = 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object", param=where)
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"{where}.role must be one of developer, system, user,"
                                 f" assistant (got {role!r})", param=f"{where}.role")
        name = message.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest(f"{where}.name must be a string", param=f"{where}.name")
        content = message.get("content")
        if isinstance(content, list):
            if not content:
                raise InvalidRequest(f"{where}.content must not be an empty array",
                                     param=f"{where}.content")
            for j, part in enumerate(content):
                pwhere = f"{where}.content[{j}]"
                if not isinstance(part, dict):
                    raise InvalidRequest(f"{pwhere} must be an object", param=pwhere)
                kind = part.get("type")
                if kind == "text":
                    text = part.get("text")
                    if not isinstance(text, str):
                        raise InvalidRequest(f"{pwhere}.text must be a string",
                                             param=f"{pwhere}.text")
                elif kind == "image_url":
                    if role != "user":
                        raise InvalidRequest(f"{pwhere}: image parts are only allowed in user"
                                             " messages", param=pwhere)
                    if not model.vision:
                        raise InvalidRequest(f"{pwhere}: the model {model.id!r} does not accept"
                                             " image input", param=pwhere,
                                             code="image_input_not_supported")
                    _check_image_url(part, pwhere)
                    images += 1
                    image = part.get("image_url")
                    url = image.get("url", "") if isinstance(image, dict) else image
                    image_bytes += len(url.encode()) if isinstance(url, str) else 0
                else:
                    raise InvalidRequest(f"{pwhere}.type must be 'text' or 'image_url'"
                                         f" (got {kind!r})", param=f"{pwhere}.type")
        elif not (isinstance(content, str)
                  or content is None and role == "assistant" and message.get("tool_calls")):
            raise InvalidRequest(f"{where}.content must be a string or an array of parts",
                                 param=f"{where}.content")
        message_bytes += len(orjson.dumps(message))
    return message_bytes - image_bytes, images


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


def _max_tokens(body: dict, default: int) -> int:
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(key)
    if value is None:
        return default
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
        return default
    if value not in allowed:
        raise InvalidRequest(f"'reasoning_effort' for {model.id} must be one of"
                             f" {', '.join(allowed)} (got {value!r})", param="reasoning_effort")
    return value


def validate_chat(body: Any, catalog: Catalog, *, openai_style: bool,
                  default_max_tokens: int) -> tuple[ChatRequest, int, int]:
    """Return the ChatRequest and (text bytes, image parts) for the hold's bound."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = [k for k in body if k not in KNOWN]
    if unknown:
        raise InvalidRequest(f"unknown parameter {unknown[0]!r}", param=unknown[0],
                             code="unknown_parameter")
    model = resolve_model(body, catalog)
    text_bytes, images = validate_messages(body.get("messages"), model)
    temperature, temperature_set = _number(body, "temperature", 0.0, 2.0, 1.0)
    max_tokens = _max_tokens(body, default_max_tokens)
    effort = _reasoning(body, model)
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("only 'n': 1 is supported", param="n")
    stream = body.get("stream")
    if stream is None:
        stream = not openai_style  # the seed's examples read a stream; OpenAI's default is off
    elif not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    include_usage = True
    if openai_style:
        options = body.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object", param="stream_options")
        include_usage = bool((options or {}).get("include_usage", False))
    check_forwarded(body)
    extra = {k: body[k] for k in PASSTHROUGH if k in body}
    request = ChatRequest(
        request_id=new_request_id(), model=model, messages=body["messages"],
        temperature=temperature, temperature_set=temperature_set,
        max_completion_tokens=max_tokens, reasoning_effort=effort, stream=stream,
        include_usage=include_usage, extra=extra,
    )
    return request, text_bytes, images
