"""The playground: chat streamed into the page, an image job watched until its picture
shows, speech played in the page. Each call goes in-process to the capability's service with
the account's playground key, so it is held, charged, limited and listed like any API call.

The page's script posts JSON with the session's CSRF token in `X-CSRF-Token`; errors come
back in the API's own envelope (status and message), which the script shows.

Every request's cost is shown as charged: chat's from the stream's usage event (sent only
once the charge is in), speech's from `X-Cost-USD`, an image's and a stopped chat's from
the usage row itself (`/playground/charge`), which the ledger wrote when it settled.
"""

from __future__ import annotations

import orjson
from sqlalchemy import select
from starlette.responses import Response

from minitoolai.catalog_status import is_available
from minitoolai.dashboard.playground_key import playground_principal
from minitoolai.dashboard.web import Ctx, page, security_headers
from minitoolai.db.tables import usage
from minitoolai.errors import InvalidRequest, ServiceUnavailable
from minitoolai.http import json_response, read_json
from minitoolai.money import format_usd
from minitoolai.speech.validation import parse_speech

CHAT_ENDPOINT = "/api/chat-completions"
IMAGE_ENDPOINT = "/api/texttoimage"
SPEECH_ENDPOINT = "/api/texttospeech/"


def _models(ctx: Ctx, kind: str) -> list[str]:
    wanted = set(ctx.service.config.playground_models)
    return [m.id for m in ctx.runtime.catalog.of_kind(kind)
            if is_available(ctx.runtime, m) and (not wanted or m.id in wanted)]


def _speech_options(ctx: Ctx) -> tuple[list[tuple[str, str, str]], str]:
    """(model id, its voices as JSON, its default voice) per speech model, and the audio
    format the page asks for (mp3 where this server can encode it, else wav)."""
    speech = ctx.runtime.speech
    if speech is None:
        return [], "wav"
    options = []
    for model_id in _models(ctx, "speech"):
        model = ctx.runtime.catalog.get(model_id)
        voices = [v["id"] for v in speech.voices(model)]
        options.append((model_id, orjson.dumps(voices).decode(), speech.default_voice(model)))
    missing = getattr(speech, "missing_formats", ())
    return options, "mp3" if "mp3" not in missing else "wav"


async def playground(ctx: Ctx) -> Response:
    images = ctx.runtime.images
    speech_models, speech_format = _speech_options(ctx)
    return ctx.render("playground.html", chat_models=_models(ctx, "chat"),
                      image_models=_models(ctx, "image") if images is not None else [],
                      speech_models=speech_models, speech_format=speech_format,
                      images_on=images is not None, speech_on=ctx.runtime.speech is not None)


async def _body(ctx: Ctx) -> dict:
    body = await read_json(ctx.request)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _api(response: Response) -> Response:
    security_headers(response)
    return response


async def chat(ctx: Ctx) -> Response:
    if ctx.runtime.chat is None:
        raise ServiceUnavailable("chat is not running on this server")
    body = await _body(ctx)
    body["stream"] = True  # the page always reads a stream
    principal = await playground_principal(ctx.db, ctx.account.id)
    return _api(await ctx.runtime.chat.respond(principal, body, endpoint=CHAT_ENDPOINT,
                                               openai_style=False))


async def image(ctx: Ctx) -> Response:
    service = ctx.runtime.images
    if service is None:
        raise ServiceUnavailable("image generation is not running on this server")
    req = service.parse(await _body(ctx))
    principal = await playground_principal(ctx.db, ctx.account.id)
    ticket = await service.submit(principal, req, endpoint=IMAGE_ENDPOINT)
    # the page then polls the public jobs endpoint with this ticket, like any client
    return _api(json_response({"status": "success", "jobid": ticket.jobid,
                               "signature": ticket.signature}))


async def speech(ctx: Ctx) -> Response:
    service = ctx.runtime.speech
    if service is None:
        raise ServiceUnavailable("text-to-speech is not running on this server")
    req = parse_speech(await _body(ctx), service, openai_style=False)
    principal = await playground_principal(ctx.db, ctx.account.id)
    return _api(await service.speak(principal, req, SPEECH_ENDPOINT))


async def charge(ctx: Ctx) -> Response:
    """What one of the account's own requests was charged, once settled: the page asks
    after a finished image job and after a chat it stopped (the hold is settled a moment
    later, when the gateway has read the upstream's usage)."""
    request_id = ctx.query("request_id").strip()
    if not 0 < len(request_id) <= 64:
        raise InvalidRequest("request_id must be 1 to 64 characters", param="request_id")
    async with ctx.db.read() as conn:
        row = (await conn.execute(select(usage.c.cost, usage.c.status).where(
            usage.c.request_id == request_id, usage.c.account_id == ctx.account.id))).first()
    if row is None:  # not settled yet, or another account's: the same answer for both
        return _api(json_response({"request_id": request_id, "settled": False}))
    return _api(json_response({"request_id": request_id, "settled": True,
                               "status": row.status, "cost": format_usd(row.cost)}))


ROUTES = [
    ("/playground", page(playground), ["GET"]),
    ("/playground/chat", page(chat), ["POST"]),
    ("/playground/image", page(image), ["POST"]),
    ("/playground/speech", page(speech), ["POST"]),
    ("/playground/charge", page(charge), ["GET"]),
]
