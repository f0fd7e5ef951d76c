"""A fake upstream that speaks OpenAI's Responses API only, as OpenAI does for its codex
models: POST /v1/chat/completions answers 404. Its answers carry a reasoning item and
reasoning tokens; with function tools and no function_call_output in the input yet it calls
the first tool (arguments streamed in fragments), else it answers text.

Usage is deterministic: input_tokens as tests/fakes/openai_responses.py counts them,
output_tokens = reasoning_tokens + text chunks (or + ARGUMENT_TOKENS for a tool call).
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from tests.fakes.openai_responses import WORDS, count_input_tokens
from tests.fakes.openai_upstream import FakeOpenAI

ARGUMENTS = ['{"city"', ': "Par', 'is"}']
ARGUMENT_TOKENS = 7


def _calls_tool(body: dict) -> bool:
    items = body.get("input")
    done = isinstance(items, list) and any(
        isinstance(i, dict) and i.get("type") == "function_call_output" for i in items)
    return bool(body.get("tools")) and not done


class FakeResponsesOnly(FakeOpenAI):
    def __init__(self, reasoning_tokens: int = 64, **kwargs) -> None:
        super().__init__(**kwargs)
        self.reasoning_tokens = reasoning_tokens
        self.chat_requests = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.chat_requests += 1
        return web.json_response({"error": {
            "message": "This model is only supported in v1/responses and not in"
                       " v1/chat/completions.", "type": "invalid_request_error",
            "param": "model", "code": None}}, status=404)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error"}}, status=401)
        body = orjson.loads(await request.read())
        self.requests.append(body)
        number = len(self.requests)
        effort = (body.get("reasoning") or {}).get("effort")
        if effort in ("none", "minimal"):  # as OpenAI answers for its codex models
            return web.json_response({"error": {
                "message": f"Unsupported value: '{effort}' is not supported with the"
                           f" '{body.get('model')}' model. Supported values are: 'low',"
                           " 'medium', and 'high'.", "type": "invalid_request_error",
                "param": "reasoning.effort", "code": "unsupported_value"}}, status=400)
        reasoning = {"type": "reasoning", "id": f"rs_{number}", "summary": []}
        if _calls_tool(body):
            name = body["tools"][0]["name"]
            answer = {"type": "function_call", "id": f"fc_{number}", "call_id": f"call_{number}",
                      "name": name, "arguments": "", "status": "in_progress"}
            pieces, produced = ARGUMENTS, ARGUMENT_TOKENS
        else:
            answer = {"type": "message", "id": f"msg_{number}", "status": "in_progress",
                      "role": "assistant", "content": []}
            pieces = [WORDS[i % len(WORDS)] for i in range(self.default_chunks)]
            produced = len(pieces)
        whole = "".join(pieces)
        if answer["type"] == "function_call":
            done = {**answer, "arguments": whole, "status": "completed"}
        else:
            done = {**answer, "status": "completed", "content": [
                {"type": "output_text", "text": whole, "annotations": [], "logprobs": []}]}
        input_tokens = count_input_tokens(body)
        output_tokens = self.reasoning_tokens + produced
        usage = {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
                 "output_tokens": output_tokens,
                 "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                 "total_tokens": input_tokens + output_tokens}

        def response(status: str, output: list, usage_of: dict | None) -> dict:
            return {"id": f"resp_{number:04d}", "object": "response",
                    "created_at": int(time.time()), "status": status,
                    "model": body["model"] + "-2025-11-13", "output": output,
                    "service_tier": "default", "error": None, "incomplete_details": None,
                    "usage": usage_of}

        if not body.get("stream"):
            return web.json_response(response("completed", [reasoning, done], usage))
        stream = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await stream.prepare(request)
        sequence = 0

        async def send(kind: str, **fields) -> None:
            nonlocal sequence
            event = {"type": kind, "sequence_number": sequence, **fields}
            sequence += 1
            await stream.write(b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(event)
                               + b"\n\n")

        await send("response.created", response=response("in_progress", [], None))
        await send("response.in_progress", response=response("in_progress", [], None))
        await send("response.output_item.added", output_index=0, item=reasoning)
        await send("response.output_item.done", output_index=0, item=reasoning)
        await send("response.output_item.added", output_index=1, item=answer)
        if answer["type"] == "function_call":
            for piece in pieces:
                await send("response.function_call_arguments.delta", item_id=answer["id"],
                           output_index=1, delta=piece)
            await send("response.function_call_arguments.done", item_id=answer["id"],
                       output_index=1, arguments=whole)
        else:
            await send("response.content_part.added", item_id=answer["id"], output_index=1,
                       content_index=0, part={"type": "output_text", "text": ""})
            for piece in pieces:
                await send("response.output_text.delta", item_id=answer["id"],
                           output_index=1, content_index=0, delta=piece, logprobs=[])
            await send("response.output_text.done", item_id=answer["id"], output_index=1,
                       content_index=0, text=whole)
        await send("response.output_item.done", output_index=1, item=done)
        await send("response.completed", response=response("completed", [reasoning, done],
                                                           usage))
        return stream
