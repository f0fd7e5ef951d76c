"""The OpenAPI document and the interactive API docs.

FastAPI describes the routes it dispatches itself; the endpoints that read their JSON by hand
(chat, whose hot routes run ahead of FastAPI, images and speech) are described here, with the
seeds' examples, so that `/api/openapi.json` lists every route with its request and response
schemas and the bearer scheme. The schemas are built from the same constants the validators
use (model names, schedulers, limits), so they cannot drift apart from what is enforced.

Swagger UI (`/api/docs`) and ReDoc (`/api/redoc`) load their scripts from the installed
`fastapi-offline` package, served at `/api/docs/assets/`: the docs work with no network.
"""

from __future__ import annotations

import copy
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from minitoolai.catalog import SEED_CHAT_PRICES, SEED_IMAGE_MODELS
from minitoolai.errors import NotFound
from minitoolai.images import request as image_request
from minitoolai.images.storage import FILES_PATH
from minitoolai.speech.formats import FORMATS

DOCS_PATH = "/api/docs"
REDOC_PATH = "/api/redoc"
ASSETS_PATH = "/api/docs/assets"
OPENAPI_PATH = "/api/openapi.json"
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
          "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}
# routes anyone may call (the rest need `Authorization: Bearer KEY`)
PUBLIC = {"/api/models/", "/api/texttoimage/jobs/", "/api/voices/"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, example=None) -> dict:
    body = {"schema": schema}
    if example is not None:
        body["example"] = example
    return {"application/json": body}


SEED_CHAT_EXAMPLE = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "How can I help you today?"},
        {"role": "user", "content": "What's the largest U.S. state by area?"},
    ],
    "temperature": 1.0,
    "max_completion_tokens": 1000,
}
SEED_STREAM_EXAMPLE = "".join(
    f"data: {line}\n\n" for line in (
        '{"id":"chatcmpl-B5qoZsT8kFDNJK3UyGLiJmjv6Pp90","object":"chat.completion.chunk",'
        '"created":1740734359,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,'
        '"delta":{"content":"Ok"},"logprobs":null,"finish_reason":null}],"usage":null}',
        '{"id":"chatcmpl-B5qoZsT8kFDNJK3UyGLiJmjv6Pp90","object":"chat.completion.chunk",'
        '"created":1740734359,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,'
        '"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}',
        '{"id":"chatcmpl-B5qoZsT8kFDNJK3UyGLiJmjv6Pp90","object":"chat.completion.chunk",'
        '"created":1740734359,"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":'
        '{"prompt_tokens":17,"completion_tokens":3,"total_tokens":20,"cost":0.00000435}}',
        "[DONE]"))
SEED_IMAGE_EXAMPLE = {
    "model": "realvision",
    "prompt": "Ultra realistic portrait of a 20 year old woman, wearing an elegant black gown,"
              " joyful expression, deep shadows, cinematic composition, moody lighting",
    "negativePrompt": "unrealistic eyes, malformed features, ugly drawn",
    "scheduler": "DPM++ SDE", "steps": 4, "cfgScale": 2.0, "width": 1152, "height": 768,
}

SCHEMAS: dict[str, dict] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": ["string", "null"]},
                           "code": {"type": ["string", "null"]}}}},
    },
    "ImageError": {
        "type": "object", "description": "The seed's error shape, with the reason added.",
        "properties": {"status": {"const": "error"}, "jobid": {"type": "null"},
                       "signature": {"type": "null"}, "message": {"type": "string"}},
    },
    "ChatMessage": {
        "type": "object", "required": ["role"],
        "properties": {
            "role": {"type": "string",
                     "enum": ["developer", "system", "user", "assistant", "tool", "function"]},
            "content": {"oneOf": [
                {"type": "string"}, {"type": "null"},
                {"type": "array", "items": {"type": "object", "required": ["type"], "properties": {
                    "type": {"type": "string", "enum": ["text", "image_url", "input_audio",
                                                        "file", "refusal"]},
                    "text": {"type": "string"},
                    "image_url": {"type": "object", "required": ["url"], "properties": {
                        "url": {"type": "string", "description": "http(s) or a data URL of"
                                " jpg, jpeg, png, webp or gif"},
                        "detail": {"type": "string", "enum": ["auto", "high", "low"]}}}}}}]},
            "name": {"type": "string"},
            "tool_calls": {"type": "array", "items": {"type": "object"}},
            "tool_call_id": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object", "required": ["model", "messages"],
        "description": "The seed's fields; `/v1` also takes OpenAI's other fields (tools,"
                       " response_format, ...), forwarded to upstreams that support them.",
        "properties": {
            "model": {"type": "string", "examples": list(SEED_CHAT_PRICES)},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2,
                            "default": 1},
            "max_completion_tokens": {"type": ["integer", "null"], "minimum": 1,
                                      "description": "default 1000 on /api"},
            "max_tokens": {"type": ["integer", "null"], "minimum": 1},
            "reasoning_effort": {"type": "string",
                                 "enum": ["none", "minimal", "low", "medium", "high"],
                                 "description": "GPT-5: minimal..high (default minimal);"
                                 " GPT-5.1 and later: none..high (default none)"},
            "stream": {"type": "boolean",
                       "description": "default true on /api, false on /v1"},
            "stream_options": {"type": "object",
                               "properties": {"include_usage": {"type": "boolean"}}},
        },
    },
    "ChatCompletion": {
        "type": "object", "description": "A whole completion (`\"stream\": false`), OpenAI's"
        " shape; `usage.cost` is the charge in USD.",
        "properties": {"id": {"type": "string"}, "object": {"const": "chat.completion"},
                       "created": {"type": "integer"}, "model": {"type": "string"},
                       "choices": {"type": "array", "items": {"type": "object"}},
                       "usage": {"type": "object"}},
    },
    "ResponsesRequest": {
        "type": "object", "required": ["model", "input"],
        "description": "OpenAI's Responses API, relayed to the model's upstream as sent;"
                       " stateful fields (previous_response_id, conversation, background)"
                       " and built-in tools are refused: their cost cannot be bounded.",
        "properties": {
            "model": {"type": "string"},
            "input": {"oneOf": [{"type": "string"},
                                {"type": "array", "items": {"type": "object"}}]},
            "instructions": {"type": "string"},
            "tools": {"type": "array", "items": {"type": "object"}},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "stream": {"type": "boolean", "default": False},
        },
    },
    "ImageRequest": {
        # unknown fields are refused (400), as is an empty prompt
        "type": "object", "required": ["model", "prompt"], "additionalProperties": False,
        "properties": {
            "model": {"type": "string", "enum": list(SEED_IMAGE_MODELS)},
            "prompt": {"type": "string", "minLength": 1,
                       "maxLength": image_request.MAX_PROMPT_CHARS},
            "negativePrompt": {"type": ["string", "null"]},
            "scheduler": {"type": ["string", "null"], "enum": [*image_request.SCHEDULERS, None],
                          "default": image_request.DEFAULT_SCHEDULER},
            "steps": {"type": ["integer", "null"], "minimum": 1, "maximum": 8,
                      "default": image_request.DEFAULT_STEPS},
            "cfgScale": {"type": ["number", "null"], "minimum": 1, "maximum": 7,
                         "default": image_request.DEFAULT_CFG},
            "width": {"type": ["integer", "null"], "minimum": image_request.MIN_SIZE,
                      "maximum": image_request.MAX_SIZE, "multipleOf": 8,
                      "default": image_request.DEFAULT_SIZE},
            "height": {"type": ["integer", "null"], "minimum": image_request.MIN_SIZE,
                       "maximum": image_request.MAX_SIZE, "multipleOf": 8,
                       "default": image_request.DEFAULT_SIZE},
            "seed": {"type": ["integer", "null"], "minimum": 0,
                     "maximum": image_request.MAX_SEED},
        },
    },
    "ImageTicket": {
        "type": "object",
        "properties": {"status": {"const": "success"}, "jobid": {"type": "integer"},
                       "signature": {"type": "string"}},
    },
    "JobRequest": {
        "type": "object", "required": ["jobid", "signature"],
        "properties": {"jobid": {"type": ["integer", "string"]},
                       "signature": {"type": "string"}},
    },
    "JobStatus": {
        "type": "object",
        "properties": {"status": {"type": "string",
                                  "enum": ["queued", "processing", "success", "error"]},
                       "image_url": {"type": "string"}, "message": {"type": "string"}},
    },
    "OpenAIImageRequest": {
        "type": "object", "required": ["prompt"],
        "properties": {"prompt": {"type": "string"}, "model": {"type": "string"},
                       "n": {"type": "integer", "minimum": 1}, "size": {"type": "string"},
                       "response_format": {"type": "string", "enum": ["url", "b64_json"]}},
    },
    "SpeechRequest": {
        "type": "object", "required": ["input"], "additionalProperties": False,
        "description": "`model` and `voice` default to the server's local engine on /api;"
                       " /v1 requires model, input and voice as OpenAI does.",
        "properties": {"model": {"type": "string"}, "input": {"type": "string", "minLength": 1},
                       "voice": {"type": "string"},
                       "format": {"type": "string", "enum": list(FORMATS)},
                       "response_format": {"type": "string", "enum": list(FORMATS)},
                       "speed": {"type": "number", "minimum": 0.25, "maximum": 4.0},
                       "instructions": {"type": "string"}},
    },
}

_ERRORS = {"400": "Invalid request", "401": "Missing, unknown, revoked or expired key",
           "402": "Not enough credit for the request's hold, or the key's lifetime or monthly"
                  " spending limit would be exceeded",
           "403": "The account is disabled, or the key may not use this model",
           "429": "Rate limited",
           "503": "The model or a dependency is not available (Retry-After when it will be)"}
_CHAT_ERRORS = {**_ERRORS, "502": "The upstream failed", "504": "The upstream timed out"}


def _errors(codes: dict[str, str], schema: str = "Error") -> dict:
    return {code: {"description": text, "content": _json(_ref(schema))}
            for code, text in codes.items()}


def _chat(summary: str, stream_default: bool) -> dict:
    ok = {"text/event-stream": {"schema": {"type": "string"}, "example": SEED_STREAM_EXAMPLE}}
    if not stream_default:
        ok = {**_json(_ref("ChatCompletion")), **ok}
    return {"summary": summary, "requestBody": {"required": True, "content": _json(
        _ref("ChatCompletionRequest"), SEED_CHAT_EXAMPLE)},
        "responses": {"200": {"description": "Server-sent events ending with the usage"
                              " chunk and `data: [DONE]`" + ("" if stream_default else
                              "; one chat.completion when not streamed"), "content": ok},
                      **_errors(_CHAT_ERRORS)}}


# the operations whose bodies FastAPI cannot see (read by hand), by path and method
OPERATIONS: dict[tuple[str, str], dict] = {
    ("/api/chat-completions/", "post"): _chat("Chat completion (the seed's endpoint)", True),
    ("/v1/chat/completions", "post"): _chat("Chat completion (OpenAI's endpoint)", False),
    ("/v1/responses", "post"): {
        "summary": "Create a model response (OpenAI's Responses API)",
        "requestBody": {"required": True, "content": _json(_ref("ResponsesRequest"), {
            "model": "gpt-5.1-codex-mini", "input": "Write a haiku about ledgers."})},
        "responses": {"200": {"description": "A response object (its usage carries `cost`),"
                              " or OpenAI's typed events when streamed",
                              "content": {"application/json": {"schema": {"type": "object"}},
                                          "text/event-stream": {"schema": {"type": "string"}}}},
                      **_errors(_CHAT_ERRORS)}},
    ("/api/texttoimage/", "post"): {
        "requestBody": {"required": True, "content": _json(_ref("ImageRequest"),
                                                           SEED_IMAGE_EXAMPLE)},
        "responses": {"200": {"description": "A signed job ticket",
                              "content": _json(_ref("ImageTicket"))},
                      **_errors(_ERRORS, "ImageError")}},
    ("/api/texttoimage/jobs/", "post"): {
        "requestBody": {"required": True, "content": _json(_ref("JobRequest"), {
            "jobid": "12345678", "signature": "abcxyz123"})},
        "responses": {"200": {"description": "The job's state; `image_url` on success",
                              "content": _json(_ref("JobStatus"))},
                      **_errors({"400": _ERRORS["400"]}, "ImageError")}},
    ("/v1/images/generations", "post"): {
        "requestBody": {"required": True, "content": _json(_ref("OpenAIImageRequest"), {
            "model": "realvision", "prompt": "a lighthouse at dawn", "size": "1024x1024"})},
        "responses": {"200": {"description": "OpenAI's image response"},
                      **_errors({**_ERRORS, "504": "The job did not finish in time;"
                                 " nothing was charged"})}},
    ("/api/texttospeech/", "post"): {
        "requestBody": {"required": True, "content": _json(_ref("SpeechRequest"), {
            "input": "Hello from MiniToolAI.", "format": "mp3"})},
        "responses": {"200": {"description": "The audio",
                              "content": {"audio/mpeg": {"schema": {"type": "string",
                                                                    "format": "binary"}}}},
                      **_errors(_ERRORS)}},
    ("/v1/audio/speech", "post"): {
        "requestBody": {"required": True, "content": _json(_ref("SpeechRequest"), {
            "model": "espeak-ng", "input": "Hello from MiniToolAI.", "voice": "alloy"})},
        "responses": {"200": {"description": "The audio",
                              "content": {"audio/mpeg": {"schema": {"type": "string",
                                                                    "format": "binary"}}}},
                      **_errors(_ERRORS)}},
}


def build_openapi(app: FastAPI) -> dict:
    """FastAPI's document for the routes it knows, completed with every hand-read body,
    the chat endpoints and the bearer scheme."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="The MiniToolAI API (`/api/...`, the seeds' contract) and its"
                                  " OpenAI-compatible routes (`/v1/...`). Prices and"
                                  " availability: `GET /api/models/`.")
    paths = doc.setdefault("paths", {})
    for (path, method), operation in OPERATIONS.items():
        merged = paths.setdefault(path, {}).setdefault(method, {})
        merged.update(copy.deepcopy(operation))
        merged.setdefault("summary", operation.get("summary", path))
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {}).update(copy.deepcopy(SCHEMAS))
    components["securitySchemes"] = {"bearer": {
        "type": "http", "scheme": "bearer", "description": "Your API key"}}
    for path, operations in paths.items():
        for operation in operations.values():
            if path not in PUBLIC and not path.startswith(("/health", FILES_PATH)):
                operation["security"] = [{"bearer": []}]
    return doc


def install(app: FastAPI) -> None:
    """Serve the document and the offline docs pages on `app` (made with docs_url=None)."""
    import fastapi_offline  # ships Swagger UI's and ReDoc's files

    assets_dir = Path(fastapi_offline.__file__).parent / "static"

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi

    async def swagger(request: Request) -> Response:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH, title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png")

    async def redoc(request: Request) -> Response:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{app.title} API",
                              redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
                              redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
                              with_google_fonts=False)

    async def asset(name: str) -> Response:
        if name not in ASSETS:
            raise NotFound(f"no docs asset {name!r}")
        return FileResponse(assets_dir / name, media_type=ASSETS[name],
                            headers={"Cache-Control": "public, max-age=86400"})

    app.add_api_route(DOCS_PATH, swagger, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route(ASSETS_PATH + "/{name}", asset, methods=["GET"], include_in_schema=False)
