"""A real TCP server on loopback that writes exactly the bytes each test scripts (framings,
encodings, cuts, silences): the upstream of the HTTP client's tests (tests/chat/providers),
and the pool those tests point at it."""

from __future__ import annotations

import asyncio
from typing import Self

from minitoolai.chat.providers.upstream_http import UpstreamPool


class ScriptedServer:
    """Answers each request with the next script: an async function (request, writer) that
    writes what it likes (and may close). Keeps every request and counts connections."""

    def __init__(self) -> None:
        self.scripts: list = []
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.connections = 0
        self.eofs = 0
        self.port = 0
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.eofs += 1
                    return
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                script = self.scripts.pop(0)
                if await script(writer) == "close":
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            self.eofs += 1


def fixed(body: bytes, extra: bytes = b"") -> object:
    async def script(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
                     + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return script


def chunked(pieces: list[bytes], *, pause: float = 0.0, extra: bytes = b"",
            cut_after: int | None = None) -> object:
    async def script(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n" + extra
                     + b"Transfer-Encoding: chunked\r\n\r\n")
        for i, piece in enumerate(pieces):
            if cut_after is not None and i == cut_after:
                writer.transport.abort()
                return "close"
            writer.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        writer.write(b"0\r\n\r\n")
    return script


async def answer(pool: UpstreamPool) -> bytes:
    """POST to the pool, read the answer whole, give the connection back."""
    response = await pool.post("/x", b"{}")
    body = await response.read()
    response.release()
    return body


def pool_for(server: ScriptedServer, **options) -> UpstreamPool:
    settings = {"connect_timeout": 2, "read_timeout": 5, "max_connections": 8}
    settings.update(options)
    return UpstreamPool("test", server.url, {"Content-Type": "application/json",
                                             "Authorization": "Bearer sk-up"}, **settings)
