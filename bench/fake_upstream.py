"""A fast fake OpenAI-compatible upstream for benchmarks: raw asyncio + httptools on uvloop.

tests/fakes/openai_upstream.py is the fake for correctness (directives, recorded bodies);
this one is for speed, so that on a 2-core machine the fake costs as little CPU as possible
and the gateway, not the fake, is what the benchmark measures:

- every response is pre-serialised once per (model, stream) and reused;
- a streamed answer is `chunks` content events, a finish event, the usage event and
  `data: [DONE]`, each sent as its own HTTP chunk (its own write, as a real upstream sends
  them), with Transfer-Encoding: chunked;
- usage is fixed: prompt_tokens=PROMPT_TOKENS, completion_tokens=chunks.

Run standalone:  python bench/fake_upstream.py --port 9100 --chunks 20
It also answers GET /stats with {"requests": N} (chat requests received so far).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httptools
import orjson

PROMPT_TOKENS = 12
WORDS = [b"Alaska", b" is", b" the", b" largest", b" U.S.", b" state", b" by", b" area", b".",
         b" Ok"]


def stream_events(model: str, chunks: int) -> list[bytes]:
    """The SSE events of one streamed completion, each `data: ...\\n\\n`."""
    created = int(time.time())
    head = (b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":'
            + str(created).encode() + b',"model":"' + model.encode()
            + b'","system_fingerprint":"fp_bench","choices":')
    events = []
    for i in range(chunks):
        delta = {"content": WORDS[i % len(WORDS)].decode()}
        if i == 0:
            delta["role"] = "assistant"
        events.append(b"data: " + head + orjson.dumps(
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
            + b',"usage":null}\n\n')
    events.append(b"data: " + head + b'[{"index":0,"delta":{},"logprobs":null,'
                  b'"finish_reason":"stop"}],"usage":null}\n\n')
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
             "total_tokens": PROMPT_TOKENS + chunks}
    events.append(b"data: " + head + b'[],"usage":' + orjson.dumps(usage) + b"}\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def completion_body(model: str, chunks: int) -> bytes:
    text = b"".join(WORDS[i % len(WORDS)] for i in range(chunks)).decode()
    return orjson.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "fp_bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                             "refusal": None},
                     "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": chunks,
                  "total_tokens": PROMPT_TOKENS + chunks}})


def _http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Responses:
    """Pre-serialised responses, built on first use per model."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self._stream: dict[str, list[bytes]] = {}
        self._whole: dict[str, bytes] = {}
        self.requests = 0

    def streamed(self, model: str) -> list[bytes]:
        parts = self._stream.get(model)
        if parts is None:
            parts = [b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"]
            parts += [_http_chunk(e) for e in stream_events(model, self.chunks)]
            parts.append(b"0\r\n\r\n")
            self._stream[model] = parts
        return parts

    def whole(self, model: str) -> bytes:
        data = self._whole.get(model)
        if data is None:
            body = completion_body(model, self.chunks)
            data = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                    + str(len(body)).encode() + b"\r\n\r\n" + body)
            self._whole[model] = data
        return data


def _plain(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class FakeProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(_plain("400 Bad Request", b'{"error":"bad request"}'))
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        transport = self.transport
        if self.url.startswith(b"/stats"):
            transport.write(_plain("200 OK", orjson.dumps({"requests": self.responses.requests})))
            return
        if not self.url.endswith(b"/chat/completions"):
            transport.write(_plain("404 Not Found", b'{"error":"not found"}'))
            return
        try:
            req = orjson.loads(b"".join(self.body))
            model = str(req.get("model", "gpt-4o-mini"))
        except (orjson.JSONDecodeError, AttributeError):
            transport.write(_plain("400 Bad Request", b'{"error":{"message":"bad json"}}'))
            return
        self.responses.requests += 1
        if req.get("stream"):
            # one write per event, as a real upstream sends them as they are generated
            for part in self.responses.streamed(model):
                transport.write(part)
        else:
            transport.write(self.responses.whole(model))

    def connection_lost(self, exc) -> None:
        self.transport = None


async def serve(host: str, port: int, chunks: int, ready=None) -> None:
    responses = Responses(chunks)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(responses), host, port,
                                      backlog=4096)
    if ready is not None:
        ready()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=20)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # plain asyncio works too, a little slower
        uvloop = None
    runner = uvloop.run if uvloop else asyncio.run
    runner(serve(args.host, args.port, args.chunks,
                 ready=lambda: print(f"fake upstream on http://{args.host}:{args.port}/v1",
                                     flush=True)))


if __name__ == "__main__":
    main()
