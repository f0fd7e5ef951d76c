"""The server's memory under hostile bodies (issue 15): `minitoolai serve` as a process of its
own gets 24 oversized uploads at once (huge JSON to the billed API routes, huge forms to the
login and sign-up pages, huge Stripe webhook bodies; declared with a Content-Length or chunked
without end), while its resident memory (VmRSS of /proc/PID/status) is sampled every 20 ms.

The bound (docs/configuration.md, "Request limits"): no request makes the server hold more
than its route's limit, so the peak RSS stays under the idle RSS + 2 x (uploads at once) x
(the largest limit) + 64 MiB for the allocator and the connections. The largest limit is set
to 1 MiB here, so the bound is idle + 112 MiB; a server that buffered the bodies would take
gigabytes (issue 15 measured 952 MB for one 400 MB webhook body). Each upload is answered
413 in its route's envelope, and the server answers normally afterwards."""

from __future__ import annotations

import os
import socket
import threading
import time

import requests

from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import free_port, start_serve_process

LIMIT = 1024 * 1024  # max_body_bytes and the webhook's max_event_bytes in this test
SLACK = 64 * 1024 * 1024
BLOCK = b"a" * (256 * 1024)
ENDLESS = 2 * 1024**3  # a chunked upload "without end" gives up here (the test then fails)


def rss_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class Upload(threading.Thread):
    """POST a body of `size` bytes (Content-Length) or an endless chunked one over a raw
    socket, reading the answer while sending: the server answers and stops reading long
    before the end."""

    def __init__(self, port: int, path: str, content_type: str, *, size: int | None,
                 extra: str = "") -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.content_type = port, path, content_type
        self.size, self.extra = size, extra
        self.answer = bytearray()
        self.sent = 0

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        reader = threading.Thread(target=self._read, args=(sock,), daemon=True)
        reader.start()
        length = ("Transfer-Encoding: chunked" if self.size is None
                  else f"Content-Length: {self.size}")
        head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: {self.content_type}\r\n{length}\r\n{self.extra}"
                f"Connection: close\r\n\r\n")
        try:
            sock.sendall(head.encode())
            while not self.answer and self.sent < (self.size or ENDLESS):
                if self.size is None:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK))
                else:
                    sock.sendall(BLOCK)
                self.sent += len(BLOCK)
        except OSError:
            pass  # the server closed its side once it had refused the body
        reader.join(timeout=60)
        sock.close()

    def _read(self, sock: socket.socket) -> None:
        try:
            while chunk := sock.recv(65536):
                self.answer.extend(chunk)
        except OSError:
            pass


def test_rss_stays_bounded_under_huge_bodies(tmp_path):
    database_url = f"sqlite:///{tmp_path / 'memory.sqlite3'}"
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
           "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "MINITOOLAI_DEMO_ACCOUNT": "false",
           "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false", "OPENAI_API_KEY": "",
           "MINITOOLAI_MAX_BODY_BYTES": str(LIMIT),
           # Stripe configured (its API is never called: no checkout is started)
           "MINITOOLAI_DASHBOARD__STRIPE__SECRET_KEY": "sk_test_unused",
           "MINITOOLAI_DASHBOARD__STRIPE__API_BASE": "http://127.0.0.1:9",
           "MINITOOLAI_DASHBOARD__STRIPE__WEBHOOK_SECRET": "whsec_test",
           "MINITOOLAI_DASHBOARD__STRIPE__MAX_EVENT_BYTES": str(LIMIT)}
    port = free_port()
    server = start_serve_process(env, port)  # migrates the database
    try:
        customer = run(make_customer(database_url, 10**9))
        base = f"http://127.0.0.1:{port}"
        key = f"Authorization: Bearer {customer.key}\r\n"
        # warm up every route the attack uses (imports, templates, pools)
        for _ in range(3):
            requests.get(base + "/login")
            requests.post(base + "/login", data={"email": "x"})
            requests.post(base + "/billing/stripe/webhook", data=b"{}",
                          headers={"Stripe-Signature": "t=1,v1=00"})
            for path in ("/v1/chat/completions", "/api/texttoimage/", "/v1/audio/speech"):
                requests.post(base + path, json={}, headers=customer.headers)
        idle = rss_of(server.pid)

        uploads = []
        for size in (300 * 2**20, 400 * 2**20, None, None):
            uploads.append(Upload(port, "/billing/stripe/webhook", "application/json",
                                  size=size, extra="Stripe-Signature: t=1,v1=00\r\n"))
        for path, content_type, size in (
                ("/login", "application/x-www-form-urlencoded", 200 * 2**20),
                ("/login", "application/x-www-form-urlencoded", 200 * 2**20),
                ("/login", "multipart/form-data; boundary=x", None),
                ("/login", "multipart/form-data; boundary=x", 200 * 2**20),
                ("/signup", "application/x-www-form-urlencoded", None),
                ("/signup", "application/x-www-form-urlencoded", None),
                ("/api/texttoimage/jobs/", "application/json", None),
                ("/api/texttoimage/jobs/", "application/json", 100 * 2**20)):
            uploads.append(Upload(port, path, content_type, size=size))
        for path in ("/v1/chat/completions", "/api/chat-completions/", "/v1/responses",
                     "/api/texttoimage/", "/v1/images/generations", "/v1/audio/speech"):
            for size in (400 * 2**20, None):
                uploads.append(Upload(port, path, "application/json", size=size, extra=key))
        assert len(uploads) == 24

        peak = idle
        for upload in uploads:
            upload.start()
        while any(upload.is_alive() for upload in uploads):
            peak = max(peak, rss_of(server.pid))
            time.sleep(0.02)
        peak = max(peak, rss_of(server.pid))

        for upload in uploads:
            answer = bytes(upload.answer)
            assert answer.startswith(b"HTTP/1.1 413 "), (upload.path, upload.size, answer[:300])
            envelope = {"/login": b"<html", "/signup": b"<html",
                        "/api/texttoimage/": b'"status":"error"',
                        "/api/texttoimage/jobs/": b'"status":"error"'}.get(
                upload.path, b'{"error":')
            assert envelope in answer.replace(b": ", b":"), (upload.path, answer[:600])
        bound = idle + 2 * len(uploads) * LIMIT + SLACK
        sent = sum(upload.sent for upload in uploads)
        print(f"\nRSS idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB under "
              f"{len(uploads)} uploads at once ({sent / 2**20:.0f} MiB sent before the 413s), "
              f"bound {bound / 2**20:.0f} MiB")
        assert peak < bound, f"peak RSS {peak / 2**20:.0f} MiB over {bound / 2**20:.0f} MiB"

        # the server still answers, and the attack cost nobody anything
        assert requests.get(base + "/health", timeout=10).status_code == 200
        balance = requests.get(base + "/api/balance/", headers=customer.headers, timeout=10)
        assert balance.status_code == 200 and balance.json()["held"] == "0", balance.text
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(30)
    run(assert_ledger_ok(database_url))
