"""HTTP routes of speech: thin, from HTTP to the service and back.

POST /api/texttospeech/   seed style: model, input, voice, format, speed (defaults for all
                          but input)
POST /v1/audio/speech     OpenAI's fields: model, input, voice, response_format, speed,
                          instructions
GET  /api/voices/         the speech models, their prices, formats and voices
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request

from minitoolai.core_routes import both
from minitoolai.errors import ServiceUnavailable
from minitoolai.http import authenticate, json_response, read_json, runtime_of
from minitoolai.idempotency.responses import idempotent
from minitoolai.speech.validation import parse_speech

router = APIRouter(redirect_slashes=False)


def _service(request: Request):
    service = runtime_of(request).speech
    if service is None:
        raise ServiceUnavailable("text-to-speech is not running on this server")
    return service


async def _speak(request: Request, *, openai_style: bool, endpoint: str):
    principal = await authenticate(request)
    service = _service(request)
    body = await read_json(request)
    speech = parse_speech(body, service, openai_style=openai_style)
    return await idempotent(request, runtime_of(request).idempotency, principal.account_id,
                            endpoint, body, lambda: service.speak(principal, speech, endpoint))


async def texttospeech(request: Request):
    return await _speak(request, openai_style=False, endpoint="/api/texttospeech/")


async def openai_speech(request: Request):
    return await _speak(request, openai_style=True, endpoint="/v1/audio/speech")


async def voices(request: Request):
    return json_response({"object": "list", "data": _service(request).listing()})


for _path in both("/api/texttospeech/"):
    router.add_api_route(_path, texttospeech, methods=["POST"],
                         include_in_schema=_path.endswith("/"))
for _path in both("/v1/audio/speech"):
    router.add_api_route(_path, openai_speech, methods=["POST"],
                         include_in_schema=not _path.endswith("/"))
for _path in both("/api/voices/"):
    router.add_api_route(_path, voices, methods=["GET"], include_in_schema=_path.endswith("/"))
