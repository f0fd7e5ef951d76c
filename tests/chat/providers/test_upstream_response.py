"""The upstreams' HTTP client, one response: framings (length, chunked, to the connection's
end), encodings, interim answers, cuts, silences past the read timeout, invalid HTTP, and the
pause of a connection whose bytes nobody reads; against a real TCP server on loopback that
writes exactly the bytes each test scripts (tests/fakes/scripted_upstream.py)."""

from __future__ import annotations

import asyncio
import gzip
import zlib

import pytest

from minitoolai.chat.providers.upstream_response import HIGH_WATER
from minitoolai.errors import UpstreamError, UpstreamTimeout
from tests.fakes.scripted_upstream import ScriptedServer, answer, chunked, fixed, pool_for


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


async def test_invalid_http_from_the_upstream_is_an_upstream_error():
    async def garbage(writer):
        writer.write(b"HTTP/1.1 abc OK\r\n\r\n")

    async with ScriptedServer() as server:
        server.scripts = [garbage]
        pool = pool_for(server)
        with pytest.raises(UpstreamError, match="invalid HTTP"):
            await pool.post("/x", b"{}")
        await pool.aclose()
