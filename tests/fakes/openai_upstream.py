"""A fake OpenAI-compatible upstream: a real aiohttp HTTP server on loopback.

It answers /v1/chat/completions streamed (the seed's event sequence) and not, and
/v1/responses (tests/fakes/openai_responses.py), and obeys
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
  [norole]      the stream's first delta without "role" (llama.cpp's server and others)
  [rounds:N]    with `tools` (or legacy `functions`): call a tool in each of the first N
                assistant turns of the conversation (default 1), then answer with text

Tool calling: while the conversation has fewer assistant tool-call turns than [rounds:N],
a request with `tools` is answered with one call of the tool named by `tool_choice` (else
the tools in turn), arguments `{"round": R, "city": "Paris"}`; with legacy `functions`,
with a `function_call`. `n` choices are answered (each the same).

Usage is deterministic: prompt_tokens = words in all messages' text + 3 per message + the
words of every tool call's arguments + 10 per tool defined; completion_tokens = content
chunks (or argument fragments) per choice, times n, plus reasoning tokens. Every request body
is kept in `requests`; `completed` counts the streams written to their [DONE], `disconnects`
those the client (the gateway) dropped before.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import orjson
from aiohttp import web

from tests.fakes.openai_responses import responses_endpoint
from tests.servers import free_port

WORDS = ["Alaska", " is", " the", " largest", " U.S.", " state", " by", " area", ".", " Ok"]
_DIRECTIVE = re.compile(
    r"\[(fail|hang|cut|slow|chunks|spaced|reasoning|late_first|late_usage|norole|rounds)"
    r"(?::(\d+))?\]")


def _text_of(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _arguments_of(message: dict) -> str:
    calls = [c.get("function", {}).get("arguments", "") for c in message.get("tool_calls") or ()]
    if isinstance(message.get("function_call"), dict):
        calls.append(message["function_call"].get("arguments", ""))
    return " ".join(calls)


def count_prompt_tokens(messages: list[dict], tools: list | None = None) -> int:
    return (sum(len(_text_of(m).split()) + len(_arguments_of(m).split()) + 3
                for m in messages) + 10 * len(tools or ()))


def tool_rounds(messages: list[dict]) -> int:
    """How many assistant turns of the conversation called a tool."""
    return sum(1 for m in messages if m.get("role") == "assistant"
               and (m.get("tool_calls") or m.get("function_call")))


def argument_fragments(round_: int) -> list[str]:
    """The arguments of the tool call of round `round_`, in the pieces they are streamed."""
    return ['{"round": ', str(round_), ', "city": ', '"Paris"}']


def _tool_call_plan(body: dict, directives: dict) -> tuple[str, str] | None:
    """(kind, function name) when this request is answered with a tool call, else None."""
    messages = body.get("messages", [])
    if tool_rounds(messages) >= int(directives.get("rounds") or 1):
        return None
    if body.get("tools") and body.get("tool_choice") != "none":
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "function":
            return "tool", choice["function"]["name"]
        tools = body["tools"]
        return "tool", tools[tool_rounds(messages) % len(tools)]["function"]["name"]
    if body.get("functions") and body.get("function_call") != "none":
        return "function", body["functions"][0]["name"]
    return None


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
        app.router.add_post("/v1/responses", self.responses)
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

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await responses_endpoint(self, request)

    @staticmethod
    def directives_in(text: str) -> list[tuple[str, str]]:
        return _DIRECTIVE.findall(text)

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
        n = body.get("n") or 1
        plan = _tool_call_plan(body, directives)
        round_ = tool_rounds(messages) + 1
        pieces = argument_fragments(round_) if plan else None
        chunks = len(pieces) if plan else int(directives.get("chunks") or self.default_chunks)
        prompt_tokens = count_prompt_tokens(messages, body.get("tools") or body.get("functions"))
        chat_id = "chatcmpl-fake" + str(len(self.requests))
        call_id = f"call_{round_}_{len(self.requests)}"
        created = int(time.time())
        model = body.get("model", "gpt-4o-mini") + "-2024-07-18"
        reasoning = int(directives.get("reasoning") or 0)
        completion = chunks * n + reasoning
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                 "total_tokens": prompt_tokens + completion,
                 "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0,
                                               "accepted_prediction_tokens": 0,
                                               "rejected_prediction_tokens": 0}}
        text = [WORDS[i % len(WORDS)] for i in range(chunks)]
        finish = {None: "stop", "tool": "tool_calls", "function": "function_call"}[
            plan and plan[0]]
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(text), "refusal": None,
                       "annotations": []}
            if plan:
                call = {"name": plan[1], "arguments": "".join(pieces)}
                message["content"] = None
                if plan[0] == "tool":
                    message["tool_calls"] = [{"id": call_id, "type": "function",
                                              "function": call}]
                else:
                    message["function_call"] = call
            return web.json_response({
                "id": chat_id, "object": "chat.completion", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": "fp_fake",
                "choices": [{"index": i, "message": message, "logprobs": None,
                             "finish_reason": finish} for i in range(n)],
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
            for i in range(chunks):
                if cut_at is not None and i == cut_at:
                    request.transport.close()
                    return response
                for index in range(n):
                    delta = self._delta(plan, i, text, pieces, call_id)
                    if i == 0 and "norole" not in directives:
                        delta = {"role": "assistant", **delta, "refusal": None}
                    await response.write(b"data: " + head + orjson.dumps(
                        [{"index": index, "delta": delta, "logprobs": None,
                          "finish_reason": None}]) + b',"usage":null}\n\n')
                if delay:
                    await asyncio.sleep(delay)
            for index in range(n):
                await response.write(b"data: " + head + b'[{"index":' + str(index).encode()
                                     + b',"delta":{},"logprobs":null,"finish_reason":"'
                                     + finish.encode() + b'"}],"usage":null}\n\n')
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

    @staticmethod
    def _delta(plan, i: int, text: list[str], pieces: list[str] | None, call_id: str) -> dict:
        if plan is None:
            return {"content": text[i]}
        if plan[0] == "function":
            call = {"arguments": pieces[i]}
            if i == 0:
                call["name"] = plan[1]
            return {"content": None, "function_call": call} if i == 0 else {"function_call": call}
        call = {"index": 0, "function": {"arguments": pieces[i]}}
        if i == 0:
            call = {"index": 0, "id": call_id, "type": "function",
                    "function": {"name": plan[1], "arguments": pieces[i]}}
            return {"content": None, "tool_calls": [call]}
        return {"tool_calls": [call]}
