"""Small HTTP helpers shared by the capabilities' routes: reading JSON bodies safely,
authenticating, and answering errors in the right envelope."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from minitoolai.accounts.auth import Principal
from minitoolai.errors import APIError, InvalidRequest, PayloadTooLarge
from minitoolai.observability.exchange import note_error, note_key


def runtime_of(request: Request):
    return request.app.state.runtime


async def read_json(request: Request, limit: int | None = None) -> Any:
    """The request body as JSON, refusing bodies over the configured limit with 413."""
    limit = limit or runtime_of(request).settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise InvalidRequest("the request body is empty: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


async def authenticate(request: Request) -> Principal:
    """Authenticate the Bearer key and apply the key's rate limit."""
    runtime = runtime_of(request)
    principal = await runtime.auth.authenticate(request.headers.get("authorization"))
    note_key(principal.key_id)  # for the access line, even when rate limited
    runtime.rate_limiter.check(principal.key_id)
    return principal


def json_response(data: Any, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, headers=headers,
                    media_type="application/json")


def error_response(exc: APIError) -> Response:
    note_error(exc.error_type)
    return Response(exc.body(), status_code=exc.status_code, headers=exc.headers,
                    media_type="application/json")


def seed_image_error_response(exc: APIError) -> Response:
    """The image endpoints keep the seed's error shape and add the message."""
    note_error(exc.error_type)
    body = {"status": "error", "jobid": None, "signature": None, "message": exc.message,
            "code": exc.code}
    return json_response(body, exc.status_code, exc.headers)
