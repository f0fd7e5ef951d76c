"""A fake OpenAI-compatible speech upstream: a real aiohttp server on loopback.

POST /v1/audio/speech answers `audio_for(body)` in several chunks with the right content
type, after checking the Bearer key. Directives in `input` change its behaviour:

  [fail:CODE]   answer HTTP CODE with an OpenAI error body
  [hang]        accept, then send nothing (for timeouts)
  [cut]         send half the audio, then drop the connection
  [json200]     answer 200 with a JSON body (a misbehaving upstream), not audio

Every request body is kept in `requests` (with its Authorization header).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading

import orjson
from aiohttp import web

from tests.servers import free_port

_DIRECTIVE = re.compile(r"\[(fail|hang|cut|json200)(?::(\d+))?\]")
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                 "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}


def audio_for(body: dict) -> bytes:
    """Deterministic stand-in audio: 64 KiB derived from the request, so tests can compare
    what the gateway relayed byte for byte."""
    seed = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
    return (seed * (65536 // len(seed)))[:65536]


class FakeSpeechUpstream:
    def __init__(self, api_key: str = "sk-speech-upstream") -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.api_key = api_key
        self.requests: list[dict] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeSpeechUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake speech upstream did not start")
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self._speech)
        # a client that hangs up cancels its handler (the [hang] directive)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self._ready.set()
        self._loop.run_forever()

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"body": body, "authorization": request.headers.get("Authorization")})
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "Incorrect API key provided",
                                                "type": "invalid_request_error"}}, status=401)
        directive = _DIRECTIVE.search(body.get("input", ""))
        if directive and directive.group(1) == "fail":
            code = int(directive.group(2) or 500)
            return web.json_response({"error": {"message": f"upstream says {code}",
                                                "type": "server_error"}}, status=code)
        if directive and directive.group(1) == "json200":
            return web.json_response({"error": {"message": "upstream says no audio today",
                                                "type": "server_error"}})
        if directive and directive.group(1) == "hang":
            await asyncio.sleep(5)
        audio = audio_for(body)
        response = web.StreamResponse(
            headers={"Content-Type": CONTENT_TYPES.get(body.get("response_format"),
                                                        "audio/mpeg")})
        await response.prepare(request)
        step = 8192
        for offset in range(0, len(audio), step):
            if directive and directive.group(1) == "cut" and offset >= len(audio) // 2:
                request.transport.close()  # drop the connection mid-body
                return response
            await response.write(audio[offset:offset + step])
            await asyncio.sleep(0)
        await response.write_eof()
        return response
