"""HTTP routes of chat: the seed's /api/chat-completions/ and OpenAI's /v1 routes."""

from __future__ import annotations

import time

from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route

from minitoolai.core_routes import both
from minitoolai.http import authenticate, json_response, read_json, runtime_of

router = APIRouter(redirect_slashes=False)
SEED_ENDPOINT = "/api/chat-completions"
OPENAI_ENDPOINT = "/v1/chat/completions"


async def seed_chat_completions(request: Request):
    """The seed's endpoint: streams by default, always ends with the usage chunk."""
    principal = await authenticate(request)
    body = await read_json(request)
    return await runtime_of(request).chat.respond(principal, body, endpoint=SEED_ENDPOINT,
                                                  openai_style=False)


async def openai_chat_completions(request: Request):
    """OpenAI's endpoint: `stream` defaults to false, `stream_options` honoured."""
    principal = await authenticate(request)
    body = await read_json(request)
    return await runtime_of(request).chat.respond(principal, body, endpoint=OPENAI_ENDPOINT,
                                                  openai_style=True)


async def openai_models(request: Request):
    """OpenAI's model list (every model this server can serve now)."""
    await authenticate(request)
    runtime = runtime_of(request)
    created = int(time.time())
    data = []
    for model in runtime.catalog:
        service = {"chat": runtime.chat, "image": runtime.images,
                   "speech": runtime.speech}[model.kind]
        if service is not None and service.is_available(model):
            data.append({"id": model.id, "object": "model", "created": created,
                         "owned_by": model.owned_by})
    return json_response({"object": "list", "data": data})


# The two hot routes are plain Starlette routes: FastAPI's per-request dependency and
# signature machinery costs about a tenth of the gateway's CPU and buys nothing here (the
# body is validated by chat/validation.py). They are documented in docs/api.md.
for _path in (*both(SEED_ENDPOINT), OPENAI_ENDPOINT):
    router.routes.append(Route(_path, seed_chat_completions if _path != OPENAI_ENDPOINT
                               else openai_chat_completions, methods=["POST"]))
router.add_api_route("/v1/models", openai_models, methods=["GET"], summary="List models")
