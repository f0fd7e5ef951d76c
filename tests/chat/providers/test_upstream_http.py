"""The upstreams' HTTP client, its pool: one well-formed POST per request, keep-alive
connections reused only while good, at most max_connections at once, TLS; against a real TCP
server on loopback (tests/fakes/scripted_upstream.py), on asyncio's loop and on uvloop (the
server's; conftest.py). What one response does is in test_upstream_response.py."""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import pytest

from minitoolai.chat.providers.upstream_http import UpstreamPool
from minitoolai.errors import ConfigError, UpstreamError
from tests.fakes.scripted_upstream import ScriptedServer, answer, chunked, fixed, pool_for


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
