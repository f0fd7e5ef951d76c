"""Type checks of the OpenAI fields the gateway forwards to upstreams as given
(validation.PASSTHROUGH), by OpenAI's published schema: a wrong type is the client's 400
here, not an upstream's 400 turned 502 after the hold was taken, and not a value a local
model trips over. `tools` and `tool_choice` are checked with the messages (tool calling).
`null` counts as absent, as OpenAI accepts it for these fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from minitoolai.errors import InvalidRequest

MAX_STOP = 4
MAX_ID_CHARS = 512  # user, prompt_cache_key, safety_identifier
MAX_METADATA = 16
MAX_LOGIT_BIAS = 1024
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
VERBOSITY = ("low", "medium", "high")
INT64 = 2**63


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _range(low: float, high: float) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not _is_number(value) or not low <= value <= high:
            return f"a number between {low:g} and {high:g}"
        return None
    return check


def _seed(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or not -INT64 <= value < INT64:
        return "an integer (64-bit)"
    return None


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _identifier(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        return f"a string of at most {MAX_ID_CHARS} characters"
    return None


def _stop(value: Any) -> str | None:
    if isinstance(value, str):
        return None
    if isinstance(value, list) and len(value) <= MAX_STOP \
            and all(isinstance(s, str) for s in value):
        return None
    return f"a string or an array of at most {MAX_STOP} strings"


def _response_format(value: Any) -> str | None:
    if not isinstance(value, dict) or value.get("type") not in RESPONSE_FORMATS:
        return "an object whose type is " + ", ".join(RESPONSE_FORMATS)
    if value["type"] == "json_schema":
        schema = value.get("json_schema")
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            return "an object with json_schema: {name, schema, ...} for type json_schema"
    return None


def _logit_bias(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > MAX_LOGIT_BIAS or not all(
            k.isascii() and k.isdigit() and _is_number(v) and -100 <= v <= 100
            for k, v in value.items()):
        return "an object mapping token ids to numbers between -100 and 100"
    return None


def _metadata(value: Any) -> str | None:
    if not isinstance(value, dict) or len(value) > MAX_METADATA or not all(
            len(k) <= 64 and isinstance(v, str) and len(v) <= 512 for k, v in value.items()):
        return (f"an object of at most {MAX_METADATA} string values (keys up to 64"
                " characters, values up to 512)")
    return None


def _verbosity(value: Any) -> str | None:
    return None if value in VERBOSITY else "one of " + ", ".join(VERBOSITY)


CHECKS: dict[str, Callable[[Any], str | None]] = {
    "top_p": _range(0, 1),
    "presence_penalty": _range(-2, 2),
    "frequency_penalty": _range(-2, 2),
    "seed": _seed,
    "stop": _stop,
    "user": _identifier,
    "prompt_cache_key": _identifier,
    "safety_identifier": _identifier,
    "response_format": _response_format,
    "logit_bias": _logit_bias,
    "metadata": _metadata,
    "parallel_tool_calls": _boolean,
    "store": _boolean,
    "verbosity": _verbosity,
}


def check_forwarded(body: dict) -> None:
    """Raise a 400 naming the first forwarded field whose value has the wrong type."""
    for key, value in body.items():  # a request has a few fields; CHECKS has many
        check = CHECKS.get(key)
        if check is None or value is None:
            continue
        expected = check(value)
        if expected is not None:
            raise InvalidRequest(f"'{key}' must be {expected}", param=key,
                                 code="invalid_type")
