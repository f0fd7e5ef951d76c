"""A fake OpenAI-compatible upstream: a real aiohttp HTTP server on loopback.

It answers /v1/chat/completions streamed (the seed's event sequence) and not, and obeys
directives written in the last user message, so concurrent tests can mix behaviours:

  [fail:CODE]   answer HTTP CODE with an OpenAI error body
  [hang]        accept, then send nothing (for timeouts)
  [cut]         stream half the chunks, then drop the connection (no usage)
  [slow]        50 ms between chunks
  [chunks:N]    N content chunks (default 5)
  [spaced]      the usage event written with spaces, as json.dumps does (llama.cpp's server)
  [reasoning:N] N hidden reasoning tokens: billed in completion_tokens, never streamed
  [late_first:MS]  wait MS milliseconds before the first content chunk
  [late_usage:MS]  wait MS milliseconds between the finish chunk and the usage event

Usage is deterministic: prompt_tokens = words in all messages + 3 per message,
completion_tokens = content chunks + reasoning tokens. Every request body is kept in
`requests`; `completed` counts the streams written to their [DONE], `disconnects` those
the client (the gateway) dropped before.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import orjson
from aiohttp import web

from tests.servers import free_port

WORDS = ["Alaska", " is", " the", " largest", " U.S.", " state", " by", " area", ".", " Ok"]
_DIRECTIVE = re.compile(
    r"\[(fail|hang|cut|slow|chunks|spaced|reasoning|late_first|late_usage)(?::(\d+))?\]")


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_prompt_tokens(messages: list[dict]) -> int:
    return sum(len(_text_of(m).split()) + 3 for m in messages)


class FakeOpenAI:
    def __init__(self, port: int | None = None, api_key: str | None = None,
                 default_chunks: int = 5) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = api_key
        self.default_chunks = default_chunks
        self.requests: list[dict] = []
        self.disconnects = 0
        self.completed = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- the endpoint ---------------------------------------------------------------------------
    async def chat(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error"}}, status=401)
        body = orjson.loads(await request.read())
        self.requests.append(body)
        messages = body.get("messages", [])
        last_user = next((_text_of(m) for m in reversed(messages) if m.get("role") == "user"), "")
        directives = {k: v for k, v in _DIRECTIVE.findall(last_user)}
        if "fail" in directives:
            code = int(directives["fail"] or 500)
            return web.json_response({"error": {"message": f"fake failure {code}",
                                                "type": "server_error"}}, status=code)
        if "hang" in directives:
            await asyncio.sleep(30)
        chunks = int(directives.get("chunks") or self.default_chunks)
        prompt_tokens = count_prompt_tokens(messages)
        chat_id = "chatcmpl-fake" + str(len(self.requests))
        created = int(time.time())
        model = body.get("model", "gpt-4o-mini") + "-2024-07-18"
        reasoning = int(directives.get("reasoning") or 0)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": chunks + reasoning,
                 "total_tokens": prompt_tokens + chunks + reasoning,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        text = [WORDS[i % len(WORDS)] for i in range(chunks)]
        if not body.get("stream"):
            return web.json_response({
                "id": chat_id, "object": "chat.completion", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": "".join(text),
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage}, dumps=lambda o: orjson.dumps(o).decode())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        head = (b'{"id":"' + chat_id.encode() + b'","object":"chat.completion.chunk","created":'
                + str(created).encode() + b',"model":"' + model.encode()
                + b'","service_tier":"default","system_fingerprint":"fp_fake","choices":')
        delay = 0.05 if "slow" in directives else 0
        cut_at = chunks // 2 if "cut" in directives else None
        late_first = int(directives.get("late_first") or 0) / 1000
        late_usage = int(directives.get("late_usage") or 0) / 1000
        try:
            if late_first:
                await asyncio.sleep(late_first)
            for i, word in enumerate(text):
                if cut_at is not None and i == cut_at:
                    request.transport.close()
                    return response
                delta = {"content": word} if i else {"role": "assistant", "content": word,
                                                     "refusal": None}
                await response.write(b"data: " + head + orjson.dumps(
                    [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
                    + b',"usage":null}\n\n')
                if delay:
                    await asyncio.sleep(delay)
            await response.write(b"data: " + head + b'[{"index":0,"delta":{},"logprobs":null,'
                                 b'"finish_reason":"stop"}],"usage":null}\n\n')
            if late_usage:
                await asyncio.sleep(late_usage)
            if "spaced" in directives:
                event = {**orjson.loads(head + b"[]}"), "usage": usage}
                await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            else:
                await response.write(b"data: " + head + b"[]," + b'"usage":'
                                     + orjson.dumps(usage) + b"}\n\n")
            await response.write(b"data: [DONE]\n\n")
            self.completed += 1
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        return response
