"""A response's head goes out with its body: the transport uvicorn writes to, on a real
loop, and the server answering through it."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import uvicorn

from minitoolai.held_heads import HeadHoldingTransport
from minitoolai.slow_clients import GuardedH11Protocol, GuardedHttpToolsProtocol
from tests.servers import free_port

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class Recorded(asyncio.Transport):
    """What reached the socket, write by write (the transport under the wrapper)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


async def test_a_head_and_the_body_written_in_the_same_turn_are_one_write():
    under = Recorded()
    transport = HeadHoldingTransport(under, asyncio.get_running_loop())
    transport.write(HEAD)
    assert under.writes == []
    transport.write(b"{}")
    assert under.writes == [HEAD + b"{}"]
    big = b"x" * (1 << 20)  # a large body is not copied, but still one write
    transport.write(HEAD)
    transport.write(big)
    assert under.writes[1] == HEAD + big and len(under.writes) == 2


async def test_a_head_whose_body_is_not_there_yet_goes_out_alone_at_the_end_of_the_turn():
    under = Recorded()
    transport = HeadHoldingTransport(under, asyncio.get_running_loop())
    transport.write(HEAD)
    await asyncio.sleep(0)
    assert under.writes == [HEAD]
    transport.write(b"data: 1\n\n")
    assert under.writes == [HEAD, b"data: 1\n\n"]  # other writes are not held


async def test_writelines_and_write_eof_send_a_held_head_first():
    under = Recorded()
    under.write_eof = lambda: under.writes.append(b"<eof>")
    transport = HeadHoldingTransport(under, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.writelines([b"a", b"b"])
    transport.write(HEAD)
    transport.write_eof()
    assert under.writes == [HEAD, b"ab", HEAD, b"<eof>"]


async def test_close_sends_a_held_head_and_abort_drops_it():
    under = Recorded()
    transport = HeadHoldingTransport(under, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.close()
    assert under.writes == [HEAD] and under.closed
    under = Recorded()
    transport = HeadHoldingTransport(under, asyncio.get_running_loop())
    transport.write(HEAD)
    transport.abort()
    await asyncio.sleep(0)
    assert under.writes == [] and under.aborted


@pytest.mark.parametrize("protocol", [GuardedHttpToolsProtocol, GuardedH11Protocol],
                         ids=["httptools", "h11"])
async def test_the_server_answers_whole_through_held_heads(protocol):
    """uvicorn with the project's protocol: plain answers, a stream whose events come
    later, keep-alive, and an answer read off a raw socket in one piece."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream")]})
            for n in range(3):
                await asyncio.sleep(0.01)
                await send({"type": "http.response.body", "body": b"data: %d\n\n" % n,
                            "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"11")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           http=protocol, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(3):  # one kept-alive connection
                answer = await client.get("/")
                assert answer.status_code == 200 and answer.json() == {"ok": True}
            async with client.stream("GET", "/stream") as stream:
                assert stream.status_code == 200
                assert b"".join([part async for part in stream.aiter_bytes()]) \
                    == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        first = await reader.read(65536)  # (one piece here; the write count is tested above)
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b'\r\n\r\n{"ok":true}')
        writer.close()
    finally:
        server.should_exit = True
        await task
