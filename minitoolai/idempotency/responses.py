"""`Idempotency-Key` on the billed POSTs (chat, images, speech): run a request once per key,
record what it answered, and answer a retry with the recording.

A request without the header costs nothing here (one header lookup). With it:

- the response is recorded as it is sent (ASGI messages, streamed or not) and stored once
  sent; a retry gets the same status, headers and body at once, with
  `Idempotent-Replayed: true` and `Original-Request` (the first request's x-request-id). A
  stream's replay is the first stream's bytes, all of them in one response: the same
  events, the usage chunk and its cost, `[DONE]`. If the first
  client hung up mid-stream, the replay has what had been sent to it by then.
- a response larger than `idempotency_max_replay_bytes` is sent in full but not kept (the
  copy stops growing at the limit): a retry gets 409 `idempotency_result_too_large` instead
  of a second run and a second charge.
- an error answered before the response began (validation, 402, an upstream refusing: none
  of them charges anything) is not kept: the key is released and a retry runs again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from minitoolai.errors import Conflict, InvalidRequest, Unprocessable
from minitoolai.idempotency.store import (
    Busy,
    IdempotencyStore,
    Mismatch,
    Recorded,
    TooLarge,
    fingerprint,
)
from minitoolai.observability import exchange

log = logging.getLogger(__name__)

HEADER = "idempotency-key"
MAX_KEY_LENGTH = 255
SKIPPED_HEADERS = {"content-length", "transfer-encoding", "date", "server", "connection"}


async def idempotent(request: Request, store: IdempotencyStore | None, account_id: int,
                     endpoint: str, body, call: Callable[[], Awaitable[Response]]) -> Response:
    key = request.headers.get(HEADER)
    if key is None or store is None:
        return await call()
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(f"the Idempotency-Key header must be 1 to {MAX_KEY_LENGTH}"
                             " characters", param="Idempotency-Key",
                             code="invalid_idempotency_key")
    try:
        recorded = await store.claim(account_id, key, fingerprint(endpoint, body))
    except Busy:
        raise Conflict("a request with this Idempotency-Key is still being processed; retry"
                       " once it has finished", headers={"Retry-After": "1"}) from None
    except TooLarge as exc:
        raise Conflict("this Idempotency-Key's request already ran and was charged once, but its"
                       f" response (status {exc.status_code}) was larger than the"
                       f" {store.max_replay_bytes} bytes kept for replay; see your usage for"
                       " it, and use a new key for a new request",
                       code="idempotency_result_too_large") from None
    except Mismatch:
        raise Unprocessable("this Idempotency-Key was already used with another request (a"
                        " different endpoint or body); use a new key for a new request"
                        ) from None
    if recorded is not None:
        return Response(recorded.body, status_code=recorded.status_code,
                        headers={**dict(recorded.headers), "Idempotent-Replayed": "true"})
    try:
        response = await call()
    except BaseException:
        await asyncio.shield(store.release(account_id, key))
        raise
    return RecordingResponse(response, store, account_id, key)


class RecordingResponse(Response):
    """Sends `inner` unchanged, keeping a copy of what was sent, stored at the end."""

    def __init__(self, inner: Response, store: IdempotencyStore, account_id: int,
                 key: str) -> None:
        self.inner = inner
        self.status_code = inner.status_code
        self.background = None
        self._store, self._account_id, self._key = store, account_id, key
        # a replay has its own x-request-id (the middleware's); it names the first one as
        # Stripe does, the id of that request's usage rows
        self._original = ("original-request", exchange.request_id())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status: int | None = None
        headers: list[tuple[str, str]] = []
        parts: list[bytes] = []
        size = 0
        limit = self._store.max_replay_bytes
        kept = False

        async def recording_send(message: Message) -> None:
            nonlocal status, kept, size, parts
            if message["type"] == "http.response.start":
                status = message["status"]
                headers.extend((k.decode("latin-1"), v.decode("latin-1"))
                               for k, v in message.get("headers", ())
                               if k.decode("latin-1").lower() not in SKIPPED_HEADERS)
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= limit:
                    parts.append(chunk)
                elif parts:  # over the limit: stop holding a copy in memory
                    parts = []
                if not message.get("more_body", False):
                    # kept before the last byte goes: a client that has the whole answer
                    # and retries at once finds it recorded, not still running (409)
                    kept = True
                    await asyncio.shield(self._keep(status, headers, parts, size))
            await send(message)

        try:
            await self.inner(scope, receive, recording_send)
        finally:
            if not kept:  # cut short (the client went away): keep what was sent
                # shielded: a client that hangs up must not leave the key `running`
                await asyncio.shield(self._keep(status, headers, parts, size))

    async def _keep(self, status: int | None, headers, parts: list[bytes], size: int) -> None:
        try:
            if status is None:  # nothing was sent: nothing happened that a retry repeats
                await self._store.release(self._account_id, self._key)
            elif size > self._store.max_replay_bytes:
                await self._store.record_too_large(self._account_id, self._key, status)
            else:
                await self._store.record(self._account_id, self._key, Recorded(
                    status, [*headers, self._original], b"".join(parts)))
        except Exception:  # the key stays `running` and is taken over once stale
            log.exception("could not record the result of Idempotency-Key %r", self._key)
