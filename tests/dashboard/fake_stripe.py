"""A fake Stripe API on loopback: POST /v1/checkout/sessions answers a session like Stripe's
(id + hosted url), GET /pay/<id> stands in for the hosted payment page. Every request's form
and Authorization header is kept in `requests`. `signed(...)` makes webhook deliveries."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from tests.servers import free_port


class FakeStripe:
    def __init__(self, secret_key: str = "sk_test_fake", webhook_secret: str = "whsec_fake"):
        self.secret_key = secret_key
        self.webhook_secret = webhook_secret
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                fake.requests.append({"path": self.path, "form": form,
                                      "authorization": self.headers.get("authorization")})
                if self.path != "/v1/checkout/sessions":
                    return self._send(404, b'{"error": {"message": "no such route"}}',
                                      "application/json")
                if self.headers.get("authorization") != f"Bearer {fake.secret_key}":
                    return self._send(401, b'{"error": {"message": "Invalid API Key"}}',
                                      "application/json")
                session_id = "cs_test_" + secrets.token_hex(30)  # as long as Stripe's ids
                body = {"id": session_id, "object": "checkout.session",
                        "url": f"{fake.base_url}/pay/{session_id}",
                        "amount_total": int(form["line_items[0][price_data][unit_amount]"])}
                self._send(200, orjson.dumps(body), "application/json")

            def do_GET(self):
                self._send(200, b"<html><body><h1>Fake Stripe Checkout</h1></body></html>",
                           "text/html")

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeStripe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def completed_event(self, session_id: str, amount_cents: int, *,
                        event_id: str | None = None) -> bytes:
        return orjson.dumps({
            "id": event_id or "evt_" + secrets.token_hex(12), "object": "event",
            "type": "checkout.session.completed",
            "data": {"object": {"id": session_id, "object": "checkout.session",
                                "payment_status": "paid", "amount_total": amount_cents,
                                "currency": "usd"}}})

    def signature(self, payload: bytes, *, secret: str | None = None,
                  timestamp: int | None = None) -> str:
        t = str(int(time.time()) if timestamp is None else timestamp)
        mac = hmac.new((secret or self.webhook_secret).encode(), t.encode() + b"." + payload,
                       hashlib.sha256).hexdigest()
        return f"t={t},v1={mac}"
