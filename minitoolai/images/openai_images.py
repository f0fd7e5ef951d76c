"""`POST /v1/images/generations`, OpenAI's shape, for SDK users: queues the images as
ordinary jobs, waits for them, and answers `url` or `b64_json` items. Errors use the
OpenAI envelope. Extra fields (MiniToolAI's): negative_prompt, scheduler, steps,
cfg_scale, seed."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import replace

from starlette.requests import Request

from minitoolai.clock import as_utc
from minitoolai.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from minitoolai.http import authenticate, json_response, read_json, runtime_of
from minitoolai.idempotency.responses import idempotent
from minitoolai.images.request import MAX_SEED

ENDPOINT = "/v1/images/generations"
SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
RESPONSE_SIZES = ("1024x1024", "1024x1536", "1536x1024")  # ImagesResponse.size's enum
IGNORED = {"quality", "style", "user", "moderation", "background"}
EXTRAS = {"negative_prompt": "negativePrompt", "scheduler": "scheduler", "steps": "steps",
          "cfg_scale": "cfgScale", "seed": "seed"}
KNOWN = {"prompt", "model", "n", "size", "response_format", "output_format"} | IGNORED | set(EXTRAS)


def _seed_body(body: dict, service) -> tuple[dict, int, str]:
    """The OpenAI body as the seed's body (validated there), plus n and response_format."""
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise InvalidRequest(f"unknown parameter(s): {', '.join(unknown)}", param=unknown[0],
                             code="unknown_parameter")
    model = body.get("model")
    if model is None:
        installed = [m for m in service.model_names() if service.is_available(m)]
        if not installed:
            raise InvalidRequest("model is required (no image model is installed to default"
                                 " to)", param="model", code="missing_field")
        model = installed[0]
    size = body.get("size") or "auto"
    if size == "auto":
        width = height = 1024
    else:
        match = SIZE.match(size) if isinstance(size, str) else None
        if not match:
            raise InvalidRequest(f"size must be 'WIDTHxHEIGHT' (e.g. '1024x1024') or 'auto',"
                                 f" got {size!r}", param="size")
        width, height = int(match[1]), int(match[2])
    n = body.get("n", 1)
    limit = service.settings.openai_max_n
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= limit:
        raise InvalidRequest(f"n must be an integer between 1 and {limit}", param="n")
    fmt = body.get("response_format") or "url"
    if fmt not in ("url", "b64_json"):
        raise InvalidRequest("response_format must be 'url' or 'b64_json'",
                             param="response_format")
    if body.get("output_format") not in (None, "png"):
        raise InvalidRequest("output_format: only 'png' is produced", param="output_format")
    seed = {"model": model, "prompt": body.get("prompt"), "width": width, "height": height}
    for ours, theirs in EXTRAS.items():
        if body.get(ours) is not None:
            seed[theirs] = body[ours]
    return seed, n, fmt


async def generations(request: Request):
    service = runtime_of(request).images
    principal = await authenticate(request)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if service is None:
        raise UpstreamError("image generation is not running on this server")
    seed, n, fmt = _seed_body(body, service)
    req = service.parse(seed)
    return await idempotent(request, runtime_of(request).idempotency, principal.account_id,
                            ENDPOINT, body, lambda: _generate(service, principal, req, n, fmt))


async def _generate(service, principal, req, n: int, fmt: str):
    # n different pictures: consecutive seeds (reproducible when the client gave one)
    reqs = [replace(req, seed=(req.seed + i) % (MAX_SEED + 1)) for i in range(n)]
    tickets = await service.submit_many(principal, reqs, endpoint=ENDPOINT)
    ids = [t.jobid for t in tickets]
    try:
        rows = await service.wait(ids, service.settings.openai_wait_seconds)
        timed_out = any(row.state not in ("success", "error") for row in rows)
        if timed_out:
            # cancel and look again in one transaction: a job that finished meanwhile is
            # charged and delivered; the rest are cancelled, uncharged. Only when none
            # finished is the answer a 504, and then nothing was charged.
            rows = await service.cancel_unfinished(
                ids, "the /v1 request waiting for it timed out")
    except BaseException:
        # the database away at the deadline (or the request cancelled): the answer is an
        # error, so the jobs must not run on and be charged
        await asyncio.shield(service.abandon(ids, "the /v1 request waiting for it failed"))
        raise
    if timed_out and not any(row.state == "success" and row.image_key for row in rows):
        raise UpstreamTimeout(
            f"the image(s) did not finish within {service.settings.openai_wait_seconds:g}"
            " s; they were cancelled and nothing was charged")
    done = [row for row in rows if row.state == "success" and row.image_key]
    if not done:
        reasons = "; ".join(sorted({row.error or "failed" for row in rows}))
        raise UpstreamError(f"image generation failed: {reasons}")
    data = []
    for row in done:
        if fmt == "b64_json":
            data.append({"b64_json": base64.b64encode(
                await service.storage.get(row.image_key)).decode(),
                "revised_prompt": row.prompt})
        else:
            url = await service.storage.url(row.image_key, as_utc(row.expires_at))
            data.append({"url": url, "revised_prompt": row.prompt})
    answer = {"created": int(time.time()), "data": data, "output_format": "png"}
    size = f"{req.width}x{req.height}"
    if size in RESPONSE_SIZES:  # OpenAI's schema allows only these; other sizes go unsaid
        answer["size"] = size
    return json_response(answer)
