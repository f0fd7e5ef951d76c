"""The app's dispatch: the chat endpoints are served ahead of FastAPI's middleware, with the
same error envelopes as every other route."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from minitoolai.chat.service import ChatService
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import ThreadedServer


def test_hot_routes_answer_errors_in_the_envelope(make_settings, database_url, monkeypatch):
    customer = run(make_customer(database_url, 1_000_000))
    with ThreadedServer(create_app(make_settings())) as live:
        for path in ("/api/chat-completions/", "/api/chat-completions",
                     "/v1/chat/completions"):
            # other methods still reach the router: 405 in the envelope
            wrong = requests.get(live.url + path, headers=customer.headers)
            assert wrong.status_code == 405
            assert wrong.json()["error"]["code"] == "method_not_allowed"
            # the hot path's own errors
            unauth = requests.post(live.url + path, json={})
            assert unauth.status_code == 401 and unauth.json()["error"]["type"]

        async def broken(self, *args, **kwargs):
            raise RuntimeError("a bug in the chat service")

        monkeypatch.setattr(ChatService, "respond", broken)
        failed = requests.post(live.url + "/api/chat-completions/", headers=customer.headers,
                               json={"model": "gpt-4o-mini",
                                     "messages": [{"role": "user", "content": "hi"}]})
        assert failed.status_code == 500
        assert failed.json() == {"error": {"message": "internal server error",
                                           "type": "server_error", "param": None,
                                           "code": None}}
        assert "bug" not in failed.text  # no internals leak to the client
        unknown = requests.post(live.url + "/api/chat-completions/x", json={})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_route"
    run(assert_ledger_ok(database_url))
