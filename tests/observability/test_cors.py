"""CORS: off by default; when configured, preflights are answered (the chat hot path
included) and responses name the allowed origin and expose x-request-id."""

from __future__ import annotations

import pytest
import requests

from minitoolai.app import create_app
from minitoolai.errors import ConfigError
from tests.observability.conftest import CHAT, OPENAI_CHAT
from tests.servers import ThreadedServer

ORIGIN = "https://app.example"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


@pytest.fixture
def cors_server(chat_settings):
    with ThreadedServer(create_app(chat_settings(cors_allow_origins=[ORIGIN]))) as live:
        yield live


def test_preflight_and_chat_response(cors_server, customer):
    for path in (CHAT, OPENAI_CHAT, "/v1/models"):
        response = requests.options(cors_server.url + path, headers=PREFLIGHT, timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert response.headers["x-request-id"].startswith("req_")
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for stream in (True, False):
        response = requests.post(cors_server.url + CHAT, json={**body, "stream": stream},
                                 headers={**customer.headers, "Origin": ORIGIN}, timeout=10)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


def test_other_origins_are_refused(cors_server):
    response = requests.options(cors_server.url + CHAT, timeout=10,
                                headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    plain = requests.get(cors_server.url + "/health", headers={"Origin": "https://evil.example"},
                         timeout=10)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_off_by_default(server):
    response = requests.options(server.url + CHAT, headers=PREFLIGHT, timeout=10)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "access-control-allow-origin" not in response.headers


def test_origins_are_checked_at_start(make_settings):
    settings = make_settings(cors_allow_origins="https://a.example, http://b.example:8080")
    assert settings.cors_allow_origins == ["https://a.example", "http://b.example:8080"]
    with pytest.raises(ConfigError, match="cors_allow_origins"):
        make_settings(cors_allow_origins=["https://a.example/"])
