"""Slow and idle clients are cut off (issue 15): a connection that sends nothing, stalls in
its request head, stalls in its body, or idles between requests is closed after its
configured timeout instead of being held for minutes. The server runs with the uvicorn
options `minitoolai serve` uses (slow_clients.uvicorn_options)."""

from __future__ import annotations

import socket
import time

import pytest

from minitoolai.app import create_app
from minitoolai.slow_clients import uvicorn_options
from tests.conftest import make_customer, run
from tests.servers import ThreadedServer

WAIT = 15  # how long the test waits for the server to act: far above the 1 s timeouts


@pytest.fixture
def live(make_settings):
    settings = make_settings(header_timeout_seconds="1", body_timeout_seconds="1",
                             timeout_keep_alive_seconds="1")
    with ThreadedServer(create_app(settings, workers=False), **uvicorn_options(settings)) as s:
        yield s


def connect(live) -> socket.socket:
    return socket.create_connection(("127.0.0.1", live.port), timeout=WAIT)


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took
    (socket.timeout, failing the test, if the server never closes it)."""
    started = time.monotonic()
    data = bytearray()
    while chunk := sock.recv(65536):
        data.extend(chunk)
    return bytes(data), time.monotonic() - started


def test_idle_and_half_sent_heads_are_closed(live):
    idle = connect(live)
    assert read_all(idle)[0] == b""  # a connection that never sends a byte
    half = connect(live)
    half.sendall(b"POST /api/chat-completions/ HTTP/1.1\r\nHost: x\r\nContent-")
    assert read_all(half)[0] == b""
    # a head sent slowly, but within the timeout, is served
    slow = connect(live)
    for part in (b"GET /health HTTP/1.1\r\n", b"Host: x\r\n", b"Connection: close\r\n\r\n"):
        slow.sendall(part)
        time.sleep(0.3)
    answer, _ = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_kept_alive_connections_are_closed_when_idle_or_stalled(live):
    sock = connect(live)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer, _ = read_all(sock)  # keep-alive: the server closes it after the idle timeout
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1
    # the first bytes of a second request stop uvicorn's keep-alive timer: ours still runs
    sock = connect(live)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first = bytearray()
    while b'{"status":"ok"}' not in first:
        first.extend(sock.recv(65536))
    sock.sendall(b"GET /hea")
    assert read_all(sock)[0] == b""


def test_a_stalled_body_gets_408_in_the_route_envelope(live, database_url):
    customer = run(make_customer(database_url, 10**9))
    sock = connect(live)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer " + customer.key.encode() + b"\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
                 b'{"model": "gpt-4o", ')
    answer, _ = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b'"code":"request_timeout"' in answer and b'"type":"invalid_request_error"' in answer
    # the image endpoints answer in the seed's shape
    sock = connect(live)
    sock.sendall(b"POST /api/texttoimage/jobs/ HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"5\r\n{\"job\r\n")
    answer, _ = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 408 ") and b'"status":"error"' in answer
