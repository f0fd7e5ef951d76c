"""HTTP routes of chat: the seed's /api/chat-completions/ and OpenAI's /v1 routes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.routing import Route

from minitoolai.catalog_status import is_available
from minitoolai.chat import responses
from minitoolai.core_routes import both
from minitoolai.errors import NotFound
from minitoolai.http import authenticate, json_response, read_json, runtime_of
from minitoolai.idempotency.responses import HEADER as IDEMPOTENCY_HEADER
from minitoolai.idempotency.responses import idempotent

router = APIRouter(redirect_slashes=False)
SEED_ENDPOINT = "/api/chat-completions"
OPENAI_ENDPOINT = "/v1/chat/completions"


async def seed_chat_completions(request: Request):
    """The seed's endpoint: streams by default, always ends with the usage chunk."""
    return await _chat(request, SEED_ENDPOINT, openai_style=False)


async def openai_chat_completions(request: Request):
    """OpenAI's endpoint: `stream` defaults to false, `stream_options` honoured."""
    return await _chat(request, OPENAI_ENDPOINT, openai_style=True)


async def _chat(request: Request, endpoint: str, *, openai_style: bool):
    principal = await authenticate(request)
    body = await read_json(request)
    runtime = runtime_of(request)
    if IDEMPOTENCY_HEADER not in request.headers:  # the hot path: no closure, no extra frame
        return await runtime.chat.respond(principal, body, endpoint=endpoint,
                                          openai_style=openai_style)
    return await idempotent(request, runtime.idempotency, principal.account_id, endpoint, body,
                            lambda: runtime.chat.respond(principal, body, endpoint=endpoint,
                                                         openai_style=openai_style))


async def openai_responses(request: Request):
    """OpenAI's Responses API, relayed (chat/responses.py)."""
    principal = await authenticate(request)
    body = await read_json(request)
    return await responses.respond(runtime_of(request).chat, principal, body)


def _servable(runtime) -> list:
    return [m for m in runtime.catalog if is_available(runtime, m)]


def _openai_model(model, created: int) -> dict:
    return {"id": model.id, "object": "model", "created": created, "owned_by": model.owned_by}


async def openai_models(request: Request):
    """OpenAI's model list (every model this server can serve now)."""
    await authenticate(request)
    runtime = runtime_of(request)
    data = [_openai_model(m, runtime.catalog.created) for m in _servable(runtime)]
    return json_response({"object": "list", "data": data})


async def openai_model(request: Request, model_id: str):
    """OpenAI's model retrieval (`client.models.retrieve(id)`)."""
    await authenticate(request)
    runtime = runtime_of(request)
    for model in _servable(runtime):
        if model.id == model_id:
            return json_response(_openai_model(model, runtime.catalog.created))
    raise NotFound(f"the model {model_id!r} does not exist or is not available on this"
                   " server", param="model", code="model_not_found")


# The two hot routes are plain Starlette routes: FastAPI's per-request dependency and
# signature machinery costs about a tenth of the gateway's CPU and buys nothing here (the
# body is validated by chat/validation.py). The app also dispatches them ahead of its
# middleware (app.GatewayApp). They are documented in docs/api.md.
HOT_ROUTES = {path: endpoint
              for endpoint, base in ((seed_chat_completions, SEED_ENDPOINT),
                                     (openai_chat_completions, OPENAI_ENDPOINT))
              for path in both(base)}
for _path, _endpoint in HOT_ROUTES.items():
    router.routes.append(Route(_path, _endpoint, methods=["POST"]))
for _path in both(responses.ENDPOINT):
    router.routes.append(Route(_path, openai_responses, methods=["POST"]))
for _path in both("/v1/models"):
    router.add_api_route(_path, openai_models, methods=["GET"], summary="List models",
                         include_in_schema=not _path.endswith("/"))
router.add_api_route("/v1/models/{model_id}", openai_model, methods=["GET"],
                     summary="Retrieve a model")
