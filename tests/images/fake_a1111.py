"""A fake AUTOMATIC1111 server: a real HTTP server on loopback speaking /sdapi/v1/txt2img.

It checks the request as the real API would (known sampler and scheduler names, sizes,
the checkpoint override), records it, and answers a base64 PNG of the requested size.
`hang_next` makes the next request wait until released (a worker killed mid-job);
`fail_next` answers 500 to the next n requests.
"""

from __future__ import annotations

import asyncio
import base64
import io
import threading

from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.servers import ThreadedServer

SAMPLERS = {"Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M",
            "DPM++ SDE", "DPM++ 2M SDE", "DPM fast"}
SCHEDULES = {"Automatic", "Karras", "Uniform", "Exponential"}
REQUIRED = ("prompt", "sampler_name", "steps", "cfg_scale", "width", "height",
            "override_settings")


class FakeA1111:
    def __init__(self, *, password: str | None = None) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.hang_next = 0
        self.fail_next = 0
        self.password = password
        self.released = threading.Event()
        self.server = ThreadedServer(Starlette(routes=[
            Route("/sdapi/v1/txt2img", self.txt2img, methods=["POST"])]))

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> FakeA1111:
        self.server.start()
        return self

    def stop(self) -> None:
        self.released.set()
        self.server.stop()

    async def txt2img(self, request: Request):
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.password and request.headers.get("authorization") != "Basic " + \
                base64.b64encode(f"user:{self.password}".encode()).decode():
            return JSONResponse({"detail": "Incorrect credentials"}, status_code=401)
        missing = [name for name in REQUIRED if name not in body]
        if missing:
            return JSONResponse({"detail": f"missing {missing}"}, status_code=422)
        if body["sampler_name"] not in SAMPLERS or body.get("scheduler", "Automatic") \
                not in SCHEDULES:
            return JSONResponse({"detail": "sampler not found"}, status_code=404)
        if self.hang_next:
            self.hang_next -= 1
            while not self.released.is_set():
                await asyncio.sleep(0.05)
        if self.fail_next:
            self.fail_next -= 1
            return JSONResponse({"error": "OutOfMemoryError", "detail": "CUDA out of memory"},
                                status_code=500)
        buffer = io.BytesIO()
        Image.new("RGB", (body["width"], body["height"]), (200, 40, 40)).save(buffer, "PNG")
        return JSONResponse({"images": [base64.b64encode(buffer.getvalue()).decode()],
                             "parameters": body, "info": "{}"})
