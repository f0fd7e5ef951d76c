"""POST /v1/responses for the fake OpenAI upstream (tests/fakes/openai_upstream.py): OpenAI's
Responses API, whole or streamed as its typed events, with the same directives in the last
user input ([fail:CODE], [chunks:N], [cut]).

Usage is deterministic: input_tokens = words of `instructions` and of every input item's
text + 3 per item; output_tokens = text chunks. Every request body is kept in the fake's
`requests`.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

WORDS = ["Alaska", " is", " the", " largest", " U.S.", " state", " by", " area", ".", " Ok"]


def _text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(p.get("text", "") for p in value if isinstance(p, dict))
    return ""


def _items(body: dict) -> list[dict]:
    value = body.get("input")
    return [{"role": "user", "content": value}] if isinstance(value, str) else list(value)


def count_input_tokens(body: dict) -> int:
    items = _items(body)
    return (len(_text(body.get("instructions")).split())
            + sum(len((_text(i.get("content")) or str(i.get("output", ""))).split()) + 3
                  for i in items))


def _response(body: dict, number: int, text: str, usage: dict | None, status: str) -> dict:
    message = {"type": "message", "id": f"msg_{number}", "status": status,
               "role": "assistant",
               "content": [{"type": "output_text", "text": text, "annotations": [],
                            "logprobs": []}] if text or status == "completed" else []}
    return {"id": f"resp_{number}", "object": "response", "created_at": int(time.time()),
            "status": status, "model": body.get("model", "") + "-2025-01-01",
            "output": [message] if status == "completed" else [],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "instructions": body.get("instructions"), "error": None,
            "incomplete_details": None, "metadata": {}, "temperature": 1.0, "top_p": 1.0,
            "text": {"format": {"type": "text"}}, "reasoning": {"effort": None},
            "usage": usage}


async def responses_endpoint(fake, request: web.Request) -> web.StreamResponse:
    if fake.api_key and request.headers.get("Authorization") != f"Bearer {fake.api_key}":
        return web.json_response({"error": {"message": "Incorrect API key provided",
                                            "type": "invalid_request_error"}}, status=401)
    body = orjson.loads(await request.read())
    fake.requests.append(body)
    last_user = next((_text(i.get("content")) for i in reversed(_items(body))
                      if i.get("role") == "user"), "")
    directives = dict(fake.directives_in(last_user))
    if "fail" in directives:
        code = int(directives["fail"] or 500)
        return web.json_response({"error": {"message": f"fake failure {code}",
                                            "type": "server_error"}}, status=code)
    chunks = int(directives.get("chunks") or fake.default_chunks)
    number = len(fake.requests)
    text = [WORDS[i % len(WORDS)] for i in range(chunks)]
    input_tokens = count_input_tokens(body)
    # the usage shape of OpenAI's current schema (cache_write_tokens is required there)
    usage = {"input_tokens": input_tokens,
             "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
             "output_tokens": chunks, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": input_tokens + chunks}
    if not body.get("stream"):
        return web.json_response(_response(body, number, "".join(text), usage, "completed"),
                                 dumps=lambda o: orjson.dumps(o).decode())
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    sequence = 0

    async def send(kind: str, **fields) -> None:
        nonlocal sequence
        event = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        await response.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event)
                             + b"\n\n")

    empty = _response(body, number, "", None, "in_progress")
    await send("response.created", response=empty)
    await send("response.in_progress", response=empty)
    item = {"type": "message", "id": f"msg_{number}", "status": "in_progress",
            "role": "assistant", "content": []}
    await send("response.output_item.added", output_index=0, item=item)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    await send("response.content_part.added", item_id=item["id"], output_index=0,
               content_index=0, part=part)
    for i, word in enumerate(text):
        if "cut" in directives and i == chunks // 2:
            request.transport.close()
            return response
        await send("response.output_text.delta", item_id=item["id"], output_index=0,
                   content_index=0, delta=word, logprobs=[])
    whole = "".join(text)
    await send("response.output_text.done", item_id=item["id"], output_index=0,
               content_index=0, text=whole, logprobs=[])
    done_part = {**part, "text": whole}
    await send("response.content_part.done", item_id=item["id"], output_index=0,
               content_index=0, part=done_part)
    await send("response.output_item.done", output_index=0,
               item={**item, "status": "completed", "content": [done_part]})
    await send("response.completed", response=_response(body, number, whole, usage,
                                                         "completed"))
    return response
