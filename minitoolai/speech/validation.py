"""Reading a speech request: every field checked before anything is reserved.

Two dialects share one checker: OpenAI's `/v1/audio/speech` (model, input, voice,
response_format, speed, instructions) and the seed-style `/api/texttospeech/` (model, input,
voice, format, speed), where model and voice have defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from minitoolai.catalog import Model
from minitoolai.catalog_status import unavailable_reason
from minitoolai.errors import InvalidRequest, ServiceUnavailable
from minitoolai.speech.formats import FORMATS

MIN_SPEED = 0.25
MAX_SPEED = 4.0


MAX_INSTRUCTIONS = 4096
OPENAI_FIELDS = ("model", "input", "voice", "response_format", "speed", "instructions",
                 "stream_format")
SEED_FIELDS = OPENAI_FIELDS + ("format",)  # the seed route also takes response_format


@dataclass(frozen=True, slots=True)
class SpeechRequest:
    model: Model
    input: str
    voice: str  # as the client sent it
    engine_voice: str | None  # the local engine's own name; None for upstream models
    format: str
    speed: float
    instructions: str | None = None

    @property
    def characters(self) -> int:
        return len(self.input)


def _string(body: dict, name: str, required: bool, default: str | None = None) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"'{name}' is required", param=name, code="missing_required")
        return default
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name, code="invalid_type")
    return value


def parse_speech(body, service, *, openai_style: bool) -> SpeechRequest:
    """Validate a request body against the catalog and the engines; raise InvalidRequest
    (400, naming the field) or ServiceUnavailable (503) for a model this server cannot run."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_type")
    fields = OPENAI_FIELDS if openai_style else SEED_FIELDS
    unknown = sorted(k for k in body if k not in fields)
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; the fields are "
                             + ", ".join(fields), param=unknown[0], code="unknown_field")
    settings = service.settings
    model_id = _string(body, "model", openai_style, settings.default_model)
    model = service.catalog.get(model_id)
    if model is None or model.kind != "speech":
        known = ", ".join(m.id for m in service.catalog.of_kind("speech"))
        raise InvalidRequest(f"unknown speech model {model_id!r}; known: {known}",
                             param="model", code="model_not_found")

    text = _string(body, "input", True)
    if not text.strip():
        raise InvalidRequest("'input' is empty: give the text to speak", param="input",
                             code="empty_input")
    if len(text) > settings.max_input_characters:
        raise InvalidRequest(
            f"'input' is {len(text)} characters long; the limit is "
            f"{settings.max_input_characters}", param="input", code="string_above_max_length")

    format_field = "response_format" if openai_style else "format"
    fmt = _string(body, format_field, False)
    if fmt is None and not openai_style:
        fmt = _string(body, "response_format", False)  # the seed route takes both names
    fmt = settings.default_format if fmt is None else fmt
    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown audio format {fmt!r}; choose one of "
                             f"{', '.join(FORMATS)}", param=format_field,
                             code="invalid_format")

    speed = body.get("speed", 1.0)
    if speed is None:
        speed = 1.0
    if isinstance(speed, bool) or not isinstance(speed, (int, float)):
        raise InvalidRequest("'speed' must be a number", param="speed", code="invalid_type")
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidRequest(f"'speed' must be between {MIN_SPEED} and {MAX_SPEED}, not "
                             f"{speed}", param="speed", code="out_of_range")

    instructions = _string(body, "instructions", False)
    if instructions is not None and not model.extra.get("instructions"):
        raise InvalidRequest(f"model {model.id!r} does not take 'instructions'",
                             param="instructions", code="unsupported_parameter")
    if instructions is not None and len(instructions) > MAX_INSTRUCTIONS:
        # forwarded upstream, which bills them: keep them bounded like the input
        raise InvalidRequest(f"'instructions' must be at most {MAX_INSTRUCTIONS} characters",
                             param="instructions", code="string_above_max_length")
    stream_format = body.get("stream_format")
    if stream_format not in (None, "audio"):
        raise InvalidRequest("only stream_format 'audio' is supported", param="stream_format",
                             code="unsupported_value")

    if not service.is_available(model):
        raise ServiceUnavailable(f"the speech model {model.id!r} is not available on this"
                                 f" server: {unavailable_reason(service.runtime, model)}",
                                 param="model", code="model_unavailable")
    voice = _string(body, "voice", openai_style, service.default_voice(model))
    engine_voice = service.check_voice(model, voice)
    return SpeechRequest(model=model, input=text, voice=voice, engine_voice=engine_voice,
                         format=fmt, speed=float(speed), instructions=instructions)
