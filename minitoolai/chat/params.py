"""Type checks of the OpenAI request parameters that the gateway forwards as given.

The upstream decides what it supports; the gateway only refuses, before anything is
reserved, what OpenAI's schema (CreateChatCompletionRequest) says is malformed, with a 400
naming the parameter. Each check is a few isinstance calls on a parameter that is present:
nothing here runs for a request that does not use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from minitoolai.errors import InvalidRequest

FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")
MODALITIES = ("text", "audio")
AUDIO_FORMATS = ("wav", "aac", "mp3", "flac", "opus", "pcm16")
VERBOSITY = ("low", "medium", "high")
SEARCH_CONTEXT_SIZES = ("low", "medium", "high")
MAX_STOP = 4
MAX_FUNCTIONS = 128
MAX_METADATA = 16
MAX_ID_CHARS = 512  # user, prompt_cache_key: forwarded and stored upstream, kept bounded


def _bad(message: str, param: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def _wrong_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return _bad(f"invalid type for '{param}': expected {expected}, got"
                f" {type(value).__name__}", param, "invalid_type")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _int(value: Any, param: str, low: int, high: int) -> None:
    if not _is_int(value):
        if isinstance(value, float) and value.is_integer() and not low <= value <= high:
            # JSON integers past 64 bits arrive as floats (orjson): say what is wrong
            raise _bad(f"'{param}' must be between {low} and {high} (got {value:g})",
                       param)
        raise _wrong_type(param, "an integer", value)
    if not low <= value <= high:
        raise _bad(f"'{param}' must be between {low} and {high} (got {value})", param)


def _number(value: Any, param: str, low: float, high: float) -> None:
    if not _is_number(value):
        raise _wrong_type(param, "a number", value)
    if not low <= value <= high:
        raise _bad(f"'{param}' must be between {low:g} and {high:g} (got {value})", param)


def _bool(value: Any, param: str) -> None:
    if not isinstance(value, bool):
        raise _wrong_type(param, "a boolean", value)


def _str(value: Any, param: str, max_length: int | None = None) -> None:
    if not isinstance(value, str):
        raise _wrong_type(param, "a string", value)
    if max_length is not None and len(value) > max_length:
        raise _bad(f"'{param}' must be at most {max_length} characters", param)


def _one_of(value: Any, param: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(f"'{param}' must be one of {', '.join(allowed)} (got {value!r})", param)


def _obj(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object", value)
    return value


def _field(obj: dict, key: str, param: str) -> Any:
    if obj.get(key) is None:
        raise _bad(f"'{param}.{key}' is required", f"{param}.{key}",
                   "missing_required_parameter")
    return obj[key]


def _function_name(value: Any, param: str) -> None:
    _str(value, param)
    if not FUNCTION_NAME.match(value):
        raise _bad(f"'{param}' must be 1 to 64 characters of a-z, A-Z, 0-9, _ and -"
                   f" (got {value!r})", param)


def _function(fn: Any, param: str) -> None:
    """FunctionObject / ChatCompletionFunctions: name, description, parameters, strict."""
    fn = _obj(fn, param)
    _function_name(_field(fn, "name", param), f"{param}.name")
    if fn.get("description") is not None:
        _str(fn["description"], f"{param}.description")
    if fn.get("parameters") is not None:
        _obj(fn["parameters"], f"{param}.parameters")
    if fn.get("strict") is not None:
        _bool(fn["strict"], f"{param}.strict")


def check_service_tier(value: Any, offered: list[str]) -> None:
    """A tier this server offers (chat.service_tiers): the others are billed by the
    upstream above the catalog's one price per model."""
    if value is not None and value not in offered:
        raise _bad(f"'service_tier' {value!r} is not offered by this server: it is billed"
                   f" above the model's price (offered: {', '.join(offered) or 'none'})",
                   "service_tier", "unsupported_parameter")


def check_tools(value: Any, param: str = "tools") -> None:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)
    for i, tool in enumerate(value):
        where = f"{param}[{i}]"
        tool = _obj(tool, where)
        kind = tool.get("type")
        if kind == "function":
            _function(_field(tool, "function", where), f"{where}.function")
        elif kind == "custom":
            custom = _obj(_field(tool, "custom", where), f"{where}.custom")
            _str(_field(custom, "name", f"{where}.custom"), f"{where}.custom.name")
        else:
            raise _bad(f"'{where}.type' must be 'function' or 'custom' (got {kind!r})",
                       f"{where}.type")


def check_tool_choice(value: Any, param: str = "tool_choice") -> None:
    if isinstance(value, str):
        _one_of(value, param, ("none", "auto", "required"))
        return
    choice = _obj(value, param)
    kind = choice.get("type")
    if kind in ("function", "custom"):
        named = _obj(_field(choice, kind, param), f"{param}.{kind}")
        _str(_field(named, "name", f"{param}.{kind}"), f"{param}.{kind}.name")
    elif kind == "allowed_tools":
        allowed = _obj(_field(choice, "allowed_tools", param), f"{param}.allowed_tools")
        _one_of(allowed.get("mode"), f"{param}.allowed_tools.mode", ("auto", "required"))
        tools = _field(allowed, "tools", f"{param}.allowed_tools")
        if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
            raise _wrong_type(f"{param}.allowed_tools.tools", "an array of objects", tools)
    else:
        raise _bad(f"'{param}' must be 'none', 'auto', 'required' or an object of type"
                   f" function, custom or allowed_tools (got type {kind!r})", param)


def check_functions(value: Any, param: str = "functions") -> None:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)
    if not 1 <= len(value) <= MAX_FUNCTIONS:
        raise _bad(f"'{param}' must hold 1 to {MAX_FUNCTIONS} functions", param)
    for i, fn in enumerate(value):
        _function(fn, f"{param}[{i}]")


def check_function_call(value: Any, param: str = "function_call") -> None:
    if isinstance(value, str):
        _one_of(value, param, ("none", "auto"))
        return
    _str(_field(_obj(value, param), "name", param), f"{param}.name")


def check_stop(value: Any, param: str = "stop") -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _wrong_type(param, "a string or an array of strings", value)
    if not 1 <= len(value) <= MAX_STOP:
        raise _bad(f"'{param}' must hold 1 to {MAX_STOP} strings", param)


def check_logit_bias(value: Any, param: str = "logit_bias") -> None:
    for token, bias in _obj(value, param).items():
        if not (token.isascii() and token.isdigit()):  # keys are token ids
            raise _bad(f"'{param}' keys must be token ids (digits), got {token[:20]!r}", param)
        if not _is_int(bias):
            raise _wrong_type(f"{param}.{token}", "an integer", bias)
        if not -100 <= bias <= 100:
            raise _bad(f"'{param}.{token}' must be between -100 and 100", f"{param}.{token}")


def check_metadata(value: Any, param: str = "metadata") -> None:
    metadata = _obj(value, param)
    if len(metadata) > MAX_METADATA:
        raise _bad(f"'{param}' may hold at most {MAX_METADATA} pairs", param)
    for key, item in metadata.items():
        _str(key, f"{param} key", 64)
        _str(item, f"{param}.{key}", 512)


def check_response_format(value: Any, param: str = "response_format") -> None:
    fmt = _obj(value, param)
    kind = fmt.get("type")
    _one_of(kind, f"{param}.type", ("text", "json_object", "json_schema"))
    if kind == "json_schema":
        schema = _obj(_field(fmt, "json_schema", param), f"{param}.json_schema")
        _function_name(_field(schema, "name", f"{param}.json_schema"),
                       f"{param}.json_schema.name")
        if schema.get("schema") is not None:
            _obj(schema["schema"], f"{param}.json_schema.schema")
        if schema.get("strict") is not None:
            _bool(schema["strict"], f"{param}.json_schema.strict")


def check_prediction(value: Any, param: str = "prediction") -> None:
    prediction = _obj(value, param)
    _one_of(prediction.get("type"), f"{param}.type", ("content",))
    content = _field(prediction, "content", param)
    if isinstance(content, str):
        return
    if not isinstance(content, list) or not content or not all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        raise _wrong_type(f"{param}.content", "a string or a non-empty array of text parts",
                          content)


def check_modalities(value: Any, param: str = "modalities") -> None:
    if not isinstance(value, list):
        raise _wrong_type(param, "an array", value)
    for i, item in enumerate(value):
        _one_of(item, f"{param}[{i}]", MODALITIES)


def check_audio(value: Any, param: str = "audio") -> None:
    audio = _obj(value, param)
    voice = _field(audio, "voice", param)
    if isinstance(voice, dict):
        _str(_field(voice, "id", f"{param}.voice"), f"{param}.voice.id")
    else:
        _str(voice, f"{param}.voice")
    _one_of(_field(audio, "format", param), f"{param}.format", AUDIO_FORMATS)


def check_web_search_options(value: Any, param: str = "web_search_options") -> None:
    options = _obj(value, param)
    if options.get("search_context_size") is not None:
        _one_of(options["search_context_size"], f"{param}.search_context_size",
                SEARCH_CONTEXT_SIZES)
    location = options.get("user_location")
    if location is not None:
        location = _obj(location, f"{param}.user_location")
        _one_of(location.get("type"), f"{param}.user_location.type", ("approximate",))
        _obj(_field(location, "approximate", f"{param}.user_location"),
             f"{param}.user_location.approximate")


# parameter -> its check, run only when the parameter is present and not null (null means
# "the default" for every one of them in OpenAI's schema)
CHECKS: dict[str, Callable[[Any], None]] = {
    "tools": check_tools,
    "tool_choice": check_tool_choice,
    "parallel_tool_calls": lambda v: _bool(v, "parallel_tool_calls"),
    "functions": check_functions,
    "function_call": check_function_call,
    "logprobs": lambda v: _bool(v, "logprobs"),
    "top_logprobs": lambda v: _int(v, "top_logprobs", 0, 20),
    "service_tier": lambda v: _one_of(v, "service_tier", SERVICE_TIERS),
    "prediction": check_prediction,
    "web_search_options": check_web_search_options,
    "modalities": check_modalities,
    "audio": check_audio,
    "seed": lambda v: _int(v, "seed", -(2**63), 2**63 - 1),
    "stop": check_stop,
    "user": lambda v: _str(v, "user", MAX_ID_CHARS),
    "metadata": check_metadata,
    "store": lambda v: _bool(v, "store"),
    "response_format": check_response_format,
    "frequency_penalty": lambda v: _number(v, "frequency_penalty", -2, 2),
    "presence_penalty": lambda v: _number(v, "presence_penalty", -2, 2),
    "logit_bias": check_logit_bias,
    "top_p": lambda v: _number(v, "top_p", 0, 1),
    "verbosity": lambda v: _one_of(v, "verbosity", VERBOSITY),
    "prompt_cache_key": lambda v: _str(v, "prompt_cache_key", MAX_ID_CHARS),
    "prompt_cache_retention": lambda v: _one_of(v, "prompt_cache_retention",
                                                ("in_memory", "24h")),
    "safety_identifier": lambda v: _str(v, "safety_identifier", 64),
}
PASSTHROUGH = frozenset(CHECKS)


def check_params(body: dict) -> dict[str, Any]:
    """Check the forwarded parameters present in `body`; return them, to be forwarded."""
    extra = {}
    for key in PASSTHROUGH.intersection(body):
        value = body[key]
        if value is not None:
            CHECKS[key](value)
        extra[key] = value
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise _bad("'tool_choice' is only allowed when 'tools' are specified", "tool_choice")
    if body.get("function_call") is not None and not body.get("functions"):
        raise _bad("'function_call' is only allowed when 'functions' are specified",
                   "function_call")
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise _bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return extra
