"""The upstreams' HTTP client against a real TCP server on loopback that writes exactly the
bytes each test scripts (framings, encodings, cuts, silences), on asyncio's loop and on
uvloop (the server's; conftest.py)."""

from __future__ import annotations

import asyncio
import gzip
import ssl
import subprocess
import zlib
from typing import Self

import pytest

from minitoolai.chat.providers.upstream_http import UpstreamPool
from minitoolai.chat.providers.upstream_response import HIGH_WATER
from minitoolai.errors import ConfigError, UpstreamError, UpstreamTimeout


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


async def test_a_request_is_one_well_formed_post_and_the_connection_is_kept():
    async with ScriptedServer() as server:
        server.scripts = [fixed(b'{"a":1}'), fixed(b'{"b":2}')]
        pool = pool_for(server)
        for expected in (b'{"a":1}', b'{"b":2}'):
            response = await pool.post("/chat/completions", b'{"x":"y"}')
            assert response.status == 200
            assert response.headers[b"content-type"] == b"application/json"
            assert await response.read() == expected
            response.release()
        await pool.aclose()
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"Authorization: Bearer sk-up\r\n" in head and b"Content-Length: 9\r\n" in head
    assert body == b'{"x":"y"}'
    assert server.connections == 1 and len(server.requests) == 2


async def test_a_chunked_stream_arrives_as_it_is_written_and_whole():
    pieces = [b"data: {\"n\":%d}\n\n" % i for i in range(20)]
    async with ScriptedServer() as server:
        server.scripts = [chunked(pieces, pause=0.01), fixed(b"{}")]
        pool = pool_for(server)
        response = await pool.post("/chat/completions", b"{}")
        reads = []
        while data := await response.read_any():
            reads.append(data)
        response.release()
        assert b"".join(reads) == b"".join(pieces)
        assert len(reads) > 1  # relayed as it came, not gathered to the end
        second = await pool.post("/chat/completions", b"{}")
        assert await second.read() == b"{}"
        second.release()
        await pool.aclose()
    assert server.connections == 1


async def test_a_response_without_a_length_ends_with_its_connection():
    async def until_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        return "close"

    async with ScriptedServer() as server:
        server.scripts = [until_close, fixed(b"next")]
        pool = pool_for(server)
        assert await answer(pool) == b"part one, part two"
        assert await answer(pool) == b"next"
        await pool.aclose()
    assert server.connections == 2


@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
async def test_a_compressed_answer_is_decoded(encoding):
    text = b'{"choices":[{"message":{"content":"' + b"word " * 2000 + b'"}}]}'
    packed = gzip.compress(text) if encoding == b"gzip" else zlib.compress(text)
    pieces = [packed[i:i + 100] for i in range(0, len(packed), 100)]
    async with ScriptedServer() as server:
        server.scripts = [chunked(pieces, extra=b"Content-Encoding: " + encoding + b"\r\n")]
        pool = pool_for(server)
        assert await answer(pool) == text
        await pool.aclose()
    assert b"Accept-Encoding: gzip, deflate\r\n" in server.requests[0][0]


async def test_an_encoding_not_offered_is_an_upstream_error():
    async with ScriptedServer() as server:
        server.scripts = [fixed(b"xx", extra=b"Content-Encoding: br\r\n")]
        pool = pool_for(server)
        with pytest.raises(UpstreamError, match="encoding it was not offered: br"):
            await pool.post("/x", b"{}")
        await pool.aclose()


async def test_a_stream_cut_off_midway_delivers_what_came_then_fails():
    pieces = [b"data: %d\n\n" % i for i in range(10)]
    async with ScriptedServer() as server:
        server.scripts = [chunked(pieces, pause=0.01, cut_after=4), fixed(b"ok")]
        pool = pool_for(server)
        response = await pool.post("/x", b"{}")
        got = b""
        with pytest.raises(UpstreamError, match="broke off the response"):
            while data := await response.read_any():
                got += data
        assert got == b"".join(pieces[:4])
        response.close()
        again = await pool.post("/x", b"{}")  # a new connection serves the next request
        assert await again.read() == b"ok"
        again.release()
        await pool.aclose()
    assert server.connections == 2


async def test_silence_past_the_read_timeout_is_an_upstream_timeout():
    async def head_then_silence(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await asyncio.sleep(5)

    async def nothing(writer):
        await asyncio.sleep(5)

    async with ScriptedServer() as server:
        server.scripts = [head_then_silence, nothing]
        pool = pool_for(server, read_timeout=0.3)
        loop = asyncio.get_running_loop()
        response = await pool.post("/x", b"{}")
        assert await response.read_any() == b"hello"
        started = loop.time()
        with pytest.raises(UpstreamTimeout, match="went silent mid-response"):
            await response.read_any()
        assert 0.25 < loop.time() - started < 2
        response.close()
        started = loop.time()
        with pytest.raises(UpstreamTimeout, match="did not answer in time"):
            await pool.post("/x", b"{}")
        assert 0.25 < loop.time() - started < 2
        await pool.aclose()


async def test_a_slow_but_steady_stream_is_not_timed_out():
    """The timeout is the silence between two bytes, not the whole response."""
    pieces = [b"data: %d\n\n" % i for i in range(8)]
    async with ScriptedServer() as server:
        server.scripts = [chunked(pieces, pause=0.1)]
        pool = pool_for(server, read_timeout=0.3)
        assert await answer(pool) == b"".join(pieces)  # 0.8 s in all
        await pool.aclose()


async def test_an_upstream_that_is_not_there_cannot_be_reached():
    async with ScriptedServer() as server:
        url = server.url
    pool = UpstreamPool("gone", url, {}, connect_timeout=2, read_timeout=2, max_connections=1)
    for _ in range(2):  # the failed connection gave its slot back
        with pytest.raises(UpstreamError, match="cannot reach upstream 'gone'"):
            await pool.post("/x", b"{}")
    await pool.aclose()


async def test_requests_past_max_connections_wait_for_one_and_a_cancelled_wait_frees_nothing():
    gate = asyncio.Event()

    async def held(writer):
        await gate.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld")

    async with ScriptedServer() as server:
        server.scripts = [held, fixed(b"next"), fixed(b"last")]
        pool = pool_for(server, max_connections=1)
        first = asyncio.create_task(pool.post("/x", b"{}"))
        await asyncio.sleep(0.05)
        cancelled = asyncio.create_task(pool.post("/x", b"{}"))
        waiting = asyncio.create_task(pool.post("/x", b"{}"))
        await asyncio.sleep(0.05)
        assert not cancelled.done() and not waiting.done()
        cancelled.cancel()
        gate.set()
        response = await first
        assert await response.read() == b"held"
        response.release()
        response = await waiting
        assert await response.read() == b"next"
        response.release()
        assert await answer(pool) == b"last"
        await pool.aclose()
    assert cancelled.cancelled()
    assert server.connections == 1 and len(server.requests) == 3


async def test_close_drops_the_connection_and_a_released_response_is_left_alone():
    async with ScriptedServer() as server:
        server.scripts = [chunked([b"a"] * 50, pause=0.02), fixed(b"b"), fixed(b"c")]
        pool = pool_for(server)
        response = await pool.post("/x", b"{}")
        await response.read_any()
        response.close()  # the upstream sees the connection end: it stops generating
        for _ in range(50):
            if server.eofs:
                break
            await asyncio.sleep(0.02)
        assert server.eofs == 1
        assert await answer(pool) == b"b"
        response.close()  # released: the pooled connection is not this holder's to drop
        assert await answer(pool) == b"c"
        await pool.aclose()
    assert server.connections == 2


async def test_unread_bytes_pause_the_upstream_until_they_are_read():
    piece = b"x" * 65536
    async with ScriptedServer() as server:
        server.scripts = [chunked([piece] * 64)]  # 4 MiB
        pool = pool_for(server)
        response = await pool.post("/x", b"{}")
        await asyncio.sleep(0.3)  # nobody reads: the connection stops reading past HIGH_WATER
        # one read of the socket may bring 256 KiB past the mark, not the whole answer
        assert response._paused and response._buffered <= HIGH_WATER + 256 * 1024
        assert len(await response.read()) == 64 * len(piece)
        response.release()
        await pool.aclose()


async def test_an_idle_connection_the_upstream_closed_is_not_reused():
    async def answer_and_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await asyncio.sleep(0.05)
        return "close"  # the upstream's own keep-alive timeout, after the answer

    async with ScriptedServer() as server:
        server.scripts = [answer_and_close, fixed(b"fresh")]
        pool = pool_for(server)
        assert await answer(pool) == b"ok"
        await asyncio.sleep(0.2)
        assert await answer(pool) == b"fresh"
        await pool.aclose()
    assert server.connections == 2


async def test_an_idle_connection_past_the_keepalive_timeout_is_not_reused():
    async with ScriptedServer() as server:
        server.scripts = [fixed(b"1"), fixed(b"2")]
        pool = pool_for(server, keepalive_timeout=0.05)
        for expected in (b"1", b"2"):
            assert await answer(pool) == expected
            await asyncio.sleep(0.1)
        await pool.aclose()
    assert server.connections == 2


async def test_an_error_status_and_its_body_are_read_like_any_answer():
    async def refused(writer):
        body = b'{"error":{"message":"nope"}}'
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\nX-Why: test\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)

    async with ScriptedServer() as server:
        server.scripts = [refused, fixed(b"after")]
        pool = pool_for(server)
        response = await pool.post("/x", b"{}")
        assert response.status == 429 and response.headers[b"x-why"] == b"test"
        assert await response.read() == b'{"error":{"message":"nope"}}'
        response.release()
        response = await pool.post("/x", b"{}")  # the connection is kept
        assert (response.status, await response.read()) == (200, b"after")
        response.release()
        await pool.aclose()
    assert server.connections == 1


async def test_interim_answers_are_skipped_and_never_end_a_response():
    """A 100 Continue or 103 Early Hints written on its own is not the answer: taken for
    it, the connection would go back to the pool with the real answer still to come, for
    the next request to read as its own."""
    async def interim_then_answer(writer):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")

    async with ScriptedServer() as server:
        server.scripts = [interim_then_answer, fixed(b"second")]
        pool = pool_for(server, max_connections=1)
        response = await pool.post("/x", b"{}")
        assert response.status == 200 and b"link" not in response.headers
        assert await response.read() == b"first"
        response.release()
        assert await answer(pool) == b"second"
        await pool.aclose()


async def test_a_body_that_does_not_decode_is_an_upstream_error_and_raw_deflate_decodes():
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    packed = raw.compress(b"raw deflate body") + raw.flush()
    async with ScriptedServer() as server:
        server.scripts = [fixed(b"\x1f\x8bnot gzip at all", extra=b"Content-Encoding: gzip\r\n"),
                          fixed(packed, extra=b"Content-Encoding: deflate\r\n")]
        pool = pool_for(server)
        response = await pool.post("/x", b"{}")
        with pytest.raises(UpstreamError, match="gzip body that does not decode"):
            await response.read()
        response.release()  # not reused: closed
        assert await answer(pool) == b"raw deflate body"
        await pool.aclose()
    assert server.connections == 2


async def test_a_connection_handed_to_a_waiter_that_was_cancelled_goes_to_the_next():
    async with ScriptedServer() as server:
        server.scripts = [fixed(b"1"), fixed(b"2")]
        pool = pool_for(server, max_connections=1)
        first = await pool.post("/x", b"{}")
        assert await first.read() == b"1"
        waiting = asyncio.create_task(pool.post("/x", b"{}"))
        await asyncio.sleep(0.01)
        first.release()  # handed to the waiting request ...
        waiting.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        response = await asyncio.wait_for(pool.post("/x", b"{}"), 2)
        assert await response.read() == b"2"
        response.release()
        await pool.aclose()
    assert server.connections == 1


async def test_invalid_http_from_the_upstream_is_an_upstream_error():
    async def garbage(writer):
        writer.write(b"HTTP/1.1 abc OK\r\n\r\n")

    async with ScriptedServer() as server:
        server.scripts = [garbage]
        pool = pool_for(server)
        with pytest.raises(UpstreamError, match="invalid HTTP"):
            await pool.post("/x", b"{}")
        await pool.aclose()


async def test_a_header_with_a_line_break_is_refused_at_start():
    with pytest.raises(ConfigError, match="line break"):
        UpstreamPool("bad", "http://127.0.0.1:1/v1", {"Authorization": "Bearer a\r\nX: b"},
                     connect_timeout=1, read_timeout=1, max_connections=1)
    with pytest.raises(ConfigError, match="credentials in the URL"):
        UpstreamPool("bad", "http://user:pw@127.0.0.1:1/v1", {}, connect_timeout=1,
                     read_timeout=1, max_connections=1)
    with pytest.raises(ConfigError, match="not an http"):
        UpstreamPool("bad", "ftp://127.0.0.1/v1", {}, connect_timeout=1, read_timeout=1,
                     max_connections=1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (cert, key)."""
    folder = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", str(key), "-out", str(cert), "-days", "1",
                           "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                          capture_output=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr[-200:]!r}")
    return cert, key


async def test_https_upstreams_are_spoken_to_over_tls(certificate):
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    server = ScriptedServer()
    server.scripts = [fixed(b"secret"), fixed(b"again")]
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0, ssl=served)
    port = listener.sockets[0].getsockname()[1]
    pool = UpstreamPool("tls", f"https://127.0.0.1:{port}/v1", {}, connect_timeout=2,
                        read_timeout=2, max_connections=2, ssl_context=trusting)
    for expected in (b"secret", b"again"):
        assert await answer(pool) == expected
    await pool.aclose()
    untrusting = UpstreamPool("tls", f"https://127.0.0.1:{port}/v1", {}, connect_timeout=2,
                              read_timeout=2, max_connections=2)
    with pytest.raises(UpstreamError, match="cannot reach upstream 'tls'.*CERTIFICATE"):
        await untrusting.post("/x", b"{}")
    listener.close()
    assert server.connections >= 1 and len(server.requests) == 2
