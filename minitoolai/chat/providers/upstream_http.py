"""The HTTP/1.1 client of the OpenAI-compatible upstreams: pooled keep-alive connections,
each request one write, each response parsed by httptools (llhttp, uvicorn's own parser).

Why by hand and not aiohttp's client (which the gateway used until the seventh pass of
issue 16, and which the speech and image backends still use): a streamed completion is
20-100 small HTTP chunks, and aiohttp's client spends Python work on each (its StreamReader
feeds, counts, wakes and pauses per chunk), the largest single share of a relayed stream's
CPU in the profiles. None of the registries' clients measured here was cheaper (bench/
RESULTS.md, fifth pass: pyreqwest and aiosonic cost more than aiohttp). Here one parser
callback appends each chunk to a list and the reader takes all of them at once (the
connection and its response: upstream_response.py); the rest is a small pool (this
module). What is left out on purpose: proxies (the provider never trusted the
environment), redirects, cookies, HTTP/2, request bodies streamed (ours are small bytes).

Errors are the gateway's own (errors.py): `UpstreamError` (502) when the upstream cannot
be reached or breaks off, `UpstreamTimeout` (504) when it is silent for `read_timeout`
between two bytes (or does not connect within `connect_timeout`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from yarl import URL

from minitoolai import __version__
from minitoolai.chat.providers.upstream_response import UpstreamResponse
from minitoolai.errors import ConfigError, UpstreamError, UpstreamTimeout


class UpstreamPool:
    """Keep-alive connections to one upstream origin, at most `max_connections` at once
    (a request past that waits for one to be released)."""

    def __init__(self, name: str, base_url: str, headers: dict[str, str], *,
                 connect_timeout: float, read_timeout: float, max_connections: int,
                 keepalive_timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"chat.providers.{name}.base_url: not an http(s) URL: {base_url!r}")
        if url.user is not None:
            raise ConfigError(f"chat.providers.{name}.base_url: credentials in the URL are not"
                              " sent; give the key as api_key")
        self.name = name
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections
        self._host = url.raw_host
        self._port = url.port
        self._ssl = (ssl_context or ssl.create_default_context()) if url.scheme == "https" \
            else None
        self._prefix = url.raw_path.rstrip("/").encode("ascii")
        lines = [("Host", url.host_port_subcomponent), ("User-Agent", f"minitoolai/{__version__}"),
                 ("Accept-Encoding", "gzip, deflate"), *headers.items()]
        for key, value in lines:
            if any(c in value for c in "\r\n\0"):
                raise ConfigError(f"chat.providers.{name}: header {key} holds a line break")
        self._head = "".join(f"{key}: {value}\r\n" for key, value in lines).encode("latin-1")
        self._idle: list[UpstreamResponse] = []
        self._open = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._closed = False
        self.loop = asyncio.get_running_loop()

    async def post(self, path: str, body: bytes) -> UpstreamResponse:
        """POST `body` (JSON) to the base URL's path + `path`; returns once the response's
        head has arrived (read its body, then release or close it)."""
        conn = await self._acquire()
        conn._send(b"POST " + self._prefix + path.encode("ascii") + b" HTTP/1.1\r\n"
                   + self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        try:
            await conn._head()
        except BaseException:
            conn.close()  # a cancelled request must not leave its answer to the next one
            raise
        return conn

    async def _acquire(self) -> UpstreamResponse:
        while True:
            if self._closed:
                raise UpstreamError(f"upstream {self.name!r}: the client is closed")
            idle, now = self._idle, self.loop.time()
            while idle:
                conn = idle.pop()
                if conn.usable and now - conn.idle_since < self.keepalive_timeout:
                    return conn
                conn._abort()  # its connection_lost frees the slot
            if self._open < self.max_connections:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_waiter(None)
                    raise
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    handed = waiter.result()  # handed over, then cancelled: pass it on
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._wake_waiter(None)
                else:
                    self._waiters.remove(waiter)
                raise
            if conn is not None:
                if conn.usable:
                    return conn
                conn._abort()  # lost since it was handed over: its slot is freed; try again

    async def _connect(self) -> UpstreamResponse:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: UpstreamResponse(self), self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None)
        except TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer in time"
                                  f" (no connection within {self.connect_timeout:g} s)") \
                from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot reach upstream {self.name!r}: {exc}") from None
        if conn.lost:  # closed before we got it: _acquire gives its slot back
            raise UpstreamError(f"cannot reach upstream {self.name!r}: it closed the connection")
        # from now on its connection_lost gives the slot back (before, _acquire does: a
        # connection closed under a cancelled create_connection must not count twice)
        conn.registered = True
        return conn

    def _wake_waiter(self, conn: UpstreamResponse | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _release(self, conn: UpstreamResponse) -> None:
        if self._closed or not conn.usable:
            conn._abort()
            return
        if not self._wake_waiter(conn):
            conn.idle_since = self.loop.time()
            self._idle.append(conn)

    def _lost(self, conn: UpstreamResponse) -> None:
        if not conn.registered:
            return
        conn.registered = False
        self._open -= 1
        if conn in self._idle:
            self._idle.remove(conn)
        self._wake_waiter(None)

    async def aclose(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn._abort()
        while self._wake_waiter(None):
            pass
