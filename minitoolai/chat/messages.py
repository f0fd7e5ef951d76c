"""Validate `messages` as OpenAI's schema does (ChatCompletionRequestMessage and its parts).

Every role OpenAI defines is accepted with the fields its schema gives it; a malformed
message is a 400 that names the field (`messages[2].tool_calls[0].function.arguments`).
Messages are forwarded as the client sent them (fields this module does not know are kept,
as OpenAI-compatible servers add some), so the hold's bound is taken over each whole
message as JSON: every byte an upstream may be sent and bill is counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from minitoolai.catalog import Model
from minitoolai.errors import InvalidRequest

ROLES = ("developer", "system", "user", "assistant", "tool", "function")
PLAIN_ROLES = ("developer", "system", "user")  # a string content is all they need (a tuple:
# a malformed, unhashable role must not raise TypeError)
DETAILS = ("auto", "high", "low")
AUDIO_FORMATS = ("wav", "mp3")
UNSUPPORTED_IMAGE_TYPES = ("bmp", "svg", "tif", "tiff", "heic", "heif", "avif", "ico", "pdf")
_DATA_URL = re.compile(r"^data:image/(jpeg|jpg|png|webp|gif);base64,[A-Za-z0-9+/=\s]+$",
                       re.IGNORECASE)
_URL_EXT = re.compile(r"\.([A-Za-z0-9]{1,5})$")

# the part types each role's content array may hold (OpenAI's schema)
PART_TYPES = {
    "developer": ("text",),
    "system": ("text",),
    "tool": ("text",),
    "user": ("text", "image_url", "input_audio", "file"),
    "assistant": ("text", "refusal"),
}


@dataclass(slots=True)
class PromptShape:
    """What the hold's prompt bound needs to know of the messages."""

    text_bytes: int = 0  # every message as JSON, less the image URLs (bounded per image)
    images: int = 0
    files: int = 0
    tool_calls: int = 0  # each rendered with framing tokens of its own


def _bad(message: str, param: str, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _string(obj: dict, key: str, where: str, *, required: bool = True,
            nullable: bool = False) -> None:
    if key not in obj:
        if required:
            raise _bad(f"{where}.{key} is required", f"{where}.{key}",
                       "missing_required_parameter")
        return
    value = obj[key]
    if value is None and (nullable or not required):
        return
    if not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string (got {type(value).__name__})",
                   f"{where}.{key}", "invalid_type")


def _object(obj: dict, key: str, where: str) -> dict:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise _bad(f"{where}.{key} must be an object", f"{where}.{key}",
                   "missing_required_parameter" if value is None else "invalid_type")
    return value


def _check_image_url(part: dict, where: str) -> int:
    """Check an image part; return the bytes of its URL (left out of the text bound)."""
    image = part.get("image_url")
    if isinstance(image, str):  # tolerated shorthand: {"type": "image_url", "image_url": "..."}
        image = {"url": image}
    if not isinstance(image, dict):
        raise _bad(f"{where}.image_url must be an object with a 'url'", f"{where}.image_url")
    url = image.get("url")
    if not isinstance(url, str) or not url:
        raise _bad(f"{where}.image_url.url is required", f"{where}.image_url.url")
    if url.startswith("data:"):
        if not _DATA_URL.match(url):
            raise _bad(f"{where}.image_url.url: a data URL must be data:image/<jpeg|jpg|png|"
                       "webp|gif>;base64,<data>", f"{where}.image_url.url", "invalid_image_url")
    elif url.startswith(("http://", "https://")):
        # URLs often have no extension (CDNs); refuse only an extension that names an image
        # type the models do not read
        last = url.split("?", 1)[0].split("#", 1)[0].rsplit("/", 1)[-1]
        ext = _URL_EXT.search(last)
        if ext and ext.group(1).lower() in UNSUPPORTED_IMAGE_TYPES:
            raise _bad(f"{where}.image_url.url: unsupported image type '.{ext.group(1)}'; use"
                       " jpg, jpeg, png, webp or gif", f"{where}.image_url.url",
                       "invalid_image_format")
    else:
        raise _bad(f"{where}.image_url.url must be an http(s) URL or a data URL",
                   f"{where}.image_url.url", "invalid_image_url")
    detail = image.get("detail", "auto")
    if detail is not None and detail not in DETAILS:
        raise _bad(f"{where}.image_url.detail must be one of auto, high, low",
                   f"{where}.image_url.detail")
    return len(url.encode())


def _check_part(part: Any, role: str, where: str, model: Model, shape: PromptShape) -> int:
    """Check one content part; return the bytes to leave out of the text bound."""
    if not isinstance(part, dict):
        raise _bad(f"{where} must be an object", where)
    kind = part.get("type")
    allowed = PART_TYPES[role]
    if kind not in allowed:
        if kind in PART_TYPES["user"] or kind == "refusal":
            raise _bad(f"{where}: '{kind}' parts are not allowed in {role} messages"
                       f" (allowed: {', '.join(allowed)})", where)
        raise _bad(f"{where}.type must be one of {', '.join(allowed)} (got {kind!r})",
                   f"{where}.type")
    if kind == "text":
        _string(part, "text", where)
    elif kind == "refusal":
        _string(part, "refusal", where)
    elif kind == "image_url":
        if not model.vision:
            raise _bad(f"{where}: the model {model.id!r} does not accept image input", where,
                       "image_input_not_supported")
        shape.images += 1
        return _check_image_url(part, where)
    elif kind == "input_audio":
        audio = _object(part, "input_audio", where)
        _string(audio, "data", f"{where}.input_audio")
        if audio.get("format") not in AUDIO_FORMATS:
            raise _bad(f"{where}.input_audio.format must be one of wav, mp3"
                       f" (got {audio.get('format')!r})", f"{where}.input_audio.format")
    else:  # file
        if not model.file_tokens_max:
            raise _bad(f"{where}: the model {model.id!r} does not accept file input", where,
                       "file_input_not_supported")
        file = _object(part, "file", where)
        for key in ("filename", "file_data", "file_id"):
            _string(file, key, f"{where}.file", required=False)
        if file.get("file_data") is None and file.get("file_id") is None:
            raise _bad(f"{where}.file needs 'file_data' or 'file_id'", f"{where}.file",
                       "missing_required_parameter")
        shape.files += 1
    return 0


def _check_content(message: dict, role: str, where: str, model: Model,
                   shape: PromptShape) -> int:
    content = message.get("content")
    if isinstance(content, str):
        return 0
    param = f"{where}.content"
    if content is None:
        if role == "function" and "content" in message:
            return 0  # schema: a string or null, but present
        if role == "assistant" and any(message.get(k) for k in
                                       ("tool_calls", "function_call", "audio", "refusal")):
            return 0  # "required unless tool_calls or function_call is specified"
        raise _bad(f"{param} is required" + (" (it may be null only when the assistant"
                                              " message has tool_calls)"
                                              if role == "assistant" else ""),
                   param, "missing_required_parameter")
    if role == "function" or not isinstance(content, list):
        raise _bad(f"{param} must be a string" + ("" if role == "function" else
                                                  " or an array of content parts"),
                   param, "invalid_type")
    if not content:
        raise _bad(f"{param} must not be an empty array", param)
    return sum(_check_part(part, role, f"{param}[{j}]", model, shape)
               for j, part in enumerate(content))


def _check_tool_calls(message: dict, where: str, shape: PromptShape) -> None:
    calls = message.get("tool_calls")
    if calls is None:
        return
    param = f"{where}.tool_calls"
    if not isinstance(calls, list):
        raise _bad(f"{param} must be an array", param, "invalid_type")
    for k, call in enumerate(calls):
        cwhere = f"{param}[{k}]"
        if not isinstance(call, dict):
            raise _bad(f"{cwhere} must be an object", cwhere, "invalid_type")
        _string(call, "id", cwhere)
        kind = call.get("type")
        if kind == "function":
            function = _object(call, "function", cwhere)
            _string(function, "name", f"{cwhere}.function")
            _string(function, "arguments", f"{cwhere}.function")
        elif kind == "custom":
            custom = _object(call, "custom", cwhere)
            _string(custom, "name", f"{cwhere}.custom")
            _string(custom, "input", f"{cwhere}.custom")
        else:
            raise _bad(f"{cwhere}.type must be 'function' or 'custom' (got {kind!r})",
                       f"{cwhere}.type")
    shape.tool_calls += len(calls)


def _check_assistant(message: dict, where: str, shape: PromptShape) -> None:
    _string(message, "refusal", where, required=False)
    _check_tool_calls(message, where, shape)
    call = message.get("function_call")
    if call is not None:
        if not isinstance(call, dict):
            raise _bad(f"{where}.function_call must be an object", f"{where}.function_call",
                       "invalid_type")
        _string(call, "name", f"{where}.function_call")
        _string(call, "arguments", f"{where}.function_call")
        shape.tool_calls += 1
    audio = message.get("audio")
    if audio is not None:
        if not isinstance(audio, dict):
            raise _bad(f"{where}.audio must be an object with an 'id'", f"{where}.audio",
                       "invalid_type")
        _string(audio, "id", f"{where}.audio")


def validate_messages(messages: Any, model: Model) -> PromptShape:
    """Check every message; return what the hold's prompt bound needs."""
    if messages is None:
        raise _bad("'messages' is required", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty array", "messages")
    shape = PromptShape()
    left_out = 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = message.get("role")
        if role in PLAIN_ROLES and message.get("content").__class__ is str \
                and "name" not in message:
            # the common case, on the hot path: nothing more to check
            shape.text_bytes += len(orjson.dumps(message))
            continue
        where = f"messages[{i}]"
        if role not in ROLES:
            raise _bad(f"{where}.role must be one of {', '.join(ROLES)} (got {role!r})",
                       f"{where}.role")
        # the function message's name is the function's, and required
        _string(message, "name", where, required=role == "function")
        left_out += _check_content(message, role, where, model, shape)
        if role == "assistant":
            _check_assistant(message, where, shape)
        elif role == "tool":
            _string(message, "tool_call_id", where)
        shape.text_bytes += len(orjson.dumps(message))
    shape.text_bytes -= left_out
    return shape
