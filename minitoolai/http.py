"""Small HTTP helpers shared by the capabilities' routes: reading JSON bodies safely,
authenticating, and answering errors in the right envelope."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from minitoolai.accounts.auth import Principal
from minitoolai.errors import (
    APIError,
    InvalidRequest,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from minitoolai.inputs import check_json
from minitoolai.observability.exchange import note_error, note_key


def runtime_of(request: Request):
    # the app's own attribute (app.py sets it with app.state.runtime): Starlette's State
    # resolves attributes in Python, and a chat request asks four times
    app = request.scope["app"]
    runtime = getattr(app, "runtime", None)
    return runtime if runtime is not None else app.state.runtime


async def read_body(request: Request, limit: int) -> bytes:
    """The whole request body, read with a bound: a declared Content-Length over `limit` is
    refused before a byte is read, and a body that turns out longer (chunked, or lying) is
    refused as soon as it passes the limit, so no request can make the server hold more
    than `limit` bytes of it (413). A body that takes longer than body_timeout_seconds to
    arrive is refused with 408. Every route that reads a body reads it through here."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() \
            and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"request body of {declared[:20]} bytes exceeds the limit of"
                              f" {limit}")
    if _arrived_whole(request.receive):
        # nothing to wait for, so no timer: asyncio.timeout costs a timer made and
        # cancelled (~11 us per request here, 1-2 % of a chat request's CPU; bench/RESULTS.md)
        message = await request.receive()  # the whole body, in one message
        body = message.get("body", b"")
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        # where Starlette keeps a body it read, so that a later request.body() returns it
        # rather than waiting on a receive() that has nothing more to give
        request._body = body
        return body
    chunks = []
    size = 0
    seconds = runtime_of(request).settings.body_timeout_seconds
    try:
        async with asyncio.timeout(seconds):  # the whole body, not each chunk: no trickling
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s") from None
    request._body = body = b"".join(chunks)  # as above
    return body


def _arrived_whole(receive) -> bool:
    """Whether uvicorn has the request's whole body in hand already (a small body arrives
    with its head: nearly every API call), so that reading it cannot wait. uvicorn's
    request cycle (httptools and h11 alike) is `receive`'s object: its `message_event`
    is set when a part of the body is ready and `more_body` is false once the last part
    arrived. Any other server, or a later uvicorn without these attributes, gets False,
    and the timed read (tests/test_http.py holds uvicorn to this)."""
    cycle = getattr(receive, "__self__", None)
    event = getattr(cycle, "message_event", None)
    return (event is not None and event.is_set() and getattr(cycle, "more_body", True) is False
            and not getattr(cycle, "disconnected", True)
            and not getattr(cycle, "response_complete", True)
            and not getattr(cycle, "waiting_for_100_continue", True))


def is_json_type(content_type: str | None) -> bool:
    """application/json (any parameters, e.g. charset) or a +json type."""
    if content_type == "application/json":  # what nearly every client sends
        return True
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                           and media.endswith("+json"))


async def read_json(request: Request, limit: int | None = None) -> Any:
    """The request body as JSON: Content-Type application/json (415 otherwise), at most
    `limit` bytes (413), valid JSON (400) whose strings are storable text and whose nesting
    is bounded (inputs.check_json, 400)."""
    if not is_json_type(request.headers.get("content-type")):
        raise UnsupportedMediaType("send the body as JSON with the header Content-Type:"
                                   " application/json")
    limit = limit or runtime_of(request).settings.max_body_bytes
    body = await read_body(request, limit)
    if not body:
        raise InvalidRequest("the request body is empty: send a JSON object")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    return check_json(value, body)


async def authenticate(request: Request) -> Principal:
    """Authenticate the Bearer key and apply the key's rate limit."""
    runtime = runtime_of(request)
    principal = await runtime.auth.authenticate(request.headers.get("authorization"))
    note_key(principal.key_id)  # for the access line, even when rate limited
    limiter = runtime.rate_limiter
    if limiter.shared:  # one Redis round trip; without Redis the check stays synchronous
        await limiter.check_shared(principal.key_id)
    else:
        limiter.check(principal.key_id)
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
