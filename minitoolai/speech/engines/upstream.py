"""An OpenAI-compatible speech upstream: POST {base_url}/audio/speech, audio bytes back.

The upstream encodes; its bytes are passed on to the client as they arrive. Its errors are
the gateway's to explain: a refused request, an unreachable host or a silence longer than
the provider's read timeout become 502 / 504 with the upstream's own message when it gave
one. Nothing is retried: audio that has started cannot be resumed elsewhere.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson

from minitoolai.errors import ServiceUnavailable, UpstreamError, UpstreamTimeout


def _upstream_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return str(data["error"].get("message") or data["error"])
    except orjson.JSONDecodeError:
        pass
    return body[:300].decode("utf-8", "replace").strip() or "(empty body)"


def is_audio(content_type: str) -> bool:
    """Whether an upstream's Content-Type may carry audio (aiohttp reads a missing one as
    application/octet-stream)."""
    return content_type.startswith("audio/") or content_type in (
        "application/octet-stream", "binary/octet-stream", "application/ogg")


class UpstreamSpeech:
    """One aiohttp session per provider, opened at start and closed at stop."""

    def __init__(self, name: str, base_url: str | None, api_key: str | None,
                 connect_timeout: float, read_timeout: float, max_connections: int) -> None:
        self.name = name
        self.base_url = (base_url or "").rstrip("/")
        self.api_key = api_key
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout,
                                              sock_read=read_timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            auto_decompress=False,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(self, payload: dict) -> AsyncIterator[bytes]:
        """Yield the upstream's audio bytes. Raises an APIError before the first chunk when
        the upstream refuses or cannot be reached."""
        if self._session is None or not self.base_url:
            raise ServiceUnavailable(f"speech provider {self.name!r} is not configured")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = self.base_url + "/audio/speech"
        try:
            response = await self._session.post(url, data=orjson.dumps(payload),
                                                headers=headers)
        except TimeoutError:
            raise UpstreamTimeout(f"speech provider {self.name!r} did not answer in time") \
                from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"speech provider {self.name!r} could not be reached: "
                                f"{exc.__class__.__name__}") from None
        return self._body(response)

    async def _body(self, response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
        try:
            if response.status != 200:
                body = await response.read()
                raise UpstreamError(f"speech provider {self.name!r} answered "
                                    f"{response.status}: {_upstream_message(body)}")
            if not is_audio(response.content_type):
                # a 200 that is not audio (an error page, a JSON body) must not be served as
                # audio and charged
                body = await response.content.read(300)
                raise UpstreamError(f"speech provider {self.name!r} answered"
                                    f" {response.content_type} instead of audio: "
                                    f"{_upstream_message(body)}")
            try:
                async for chunk in response.content.iter_any():
                    if chunk:
                        yield chunk
            except TimeoutError:
                raise UpstreamTimeout(f"speech provider {self.name!r} stopped sending audio") \
                    from None
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"speech provider {self.name!r} broke off: "
                                    f"{exc.__class__.__name__}") from None
        finally:
            response.release()
