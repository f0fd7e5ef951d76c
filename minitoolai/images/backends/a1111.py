"""The AUTOMATIC1111 / Forge backend: `POST {base_url}/sdapi/v1/txt2img` on a server the
operator runs (started with --api). The checkpoint is chosen per request through
override_settings.sd_model_checkpoint and left loaded for the next one.

A1111 1.9+ and Forge take the sampler and the noise schedule separately ("DPM++ 2M" +
"Karras"); older servers want the combined name ("DPM++ 2M Karras"): see
images.a1111.separate_scheduler.
"""

from __future__ import annotations

import asyncio
import base64
import io

import aiohttp

from minitoolai.errors import UpstreamError, UpstreamTimeout
from minitoolai.images.queue import ClaimedJob

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class UpstreamRefused(Exception):
    """The upstream answered 4xx: asking again would get the same answer (not retried)."""


def sampler_fields(name: str, separate: bool) -> dict:
    if not separate:
        return {"sampler_name": name}
    if name.endswith(" Karras"):
        return {"sampler_name": name.removesuffix(" Karras"), "scheduler": "Karras"}
    return {"sampler_name": name, "scheduler": "Automatic"}


def txt2img_payload(job: ClaimedJob, checkpoint: str, separate_scheduler: bool) -> dict:
    return {
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        **sampler_fields(job.scheduler, separate_scheduler),
        "steps": job.steps,
        "cfg_scale": job.cfg_scale,
        "width": job.width,
        "height": job.height,
        "seed": job.seed,
        "batch_size": 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "override_settings": {"sd_model_checkpoint": checkpoint},
        "override_settings_restore_afterwards": False,
    }


def as_png(data: bytes) -> bytes:
    if data.startswith(PNG_MAGIC):
        return data
    # the server's samples_format may be jpg/webp: convert (Pillow comes with `images`)
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buffer, format="PNG")
    return buffer.getvalue()


class A1111Backend:
    name = "a1111"

    def __init__(self, settings) -> None:
        self.settings = settings  # ImagesSettings
        self.options = settings.a1111
        self.max_batch = self.options.max_batch
        self._session: aiohttp.ClientSession | None = None

    def is_available(self, model: str) -> bool:
        cfg = self.settings.models.get(model)
        return bool(cfg and cfg.enabled and self.options.base_url)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {}
            if self.options.username:  # the server's --api-auth user:password
                pair = f"{self.options.username}:{self.options.password or ''}".encode()
                headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.options.timeout_seconds))
        return self._session

    async def _one(self, job: ClaimedJob) -> bytes:
        cfg = self.settings.models[job.model]
        url = self.options.base_url.rstrip("/") + "/sdapi/v1/txt2img"
        payload = txt2img_payload(job, cfg.checkpoint or job.model,
                                  self.options.separate_scheduler)
        try:
            async with self._client().post(url, json=payload) as response:
                text = await response.text()
                if response.status >= 500:
                    raise UpstreamError(f"the A1111 server answered {response.status}:"
                                        f" {text[:300]}")
                if response.status >= 400:
                    raise UpstreamRefused(f"the A1111 server refused the request"
                                          f" ({response.status}): {text[:300]}")
                body = await response.json(content_type=None)
        except TimeoutError:
            raise UpstreamTimeout(f"the A1111 server did not answer within"
                                  f" {self.options.timeout_seconds:g} s") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach the A1111 server at"
                                f" {self.options.base_url}: {exc}") from None
        images = body.get("images") if isinstance(body, dict) else None
        if not images:
            raise UpstreamError("the A1111 server answered without an image")
        try:
            return as_png(base64.b64decode(images[0]))
        except (ValueError, OSError) as exc:
            raise UpstreamError(f"the A1111 server's image is not readable: {exc}") from None

    async def generate(self, jobs: list[ClaimedJob]) -> list[bytes]:
        return list(await asyncio.gather(*(self._one(job) for job in jobs)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
