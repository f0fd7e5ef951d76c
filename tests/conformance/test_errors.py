"""The error answers of /v1 (chat completions, responses, models, images, speech), status by
status, against OpenAI's ErrorResponse schema."""

from __future__ import annotations

import pytest
import requests

from minitoolai.app import create_app
from tests.conformance.schemas import assert_conforms
from tests.conftest import make_customer, run
from tests.servers import ThreadedServer

HELLO = [{"role": "user", "content": "hello"}]
CHAT = {"model": "gpt-4o", "messages": HELLO}
SPEECH = {"model": "espeak-ng", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}


def conforms(response, status: int) -> dict:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_conforms("ErrorResponse", body)
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def send(method: str, url: str, key: str | None = None, body=None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.request(method, url, headers=headers, json=body, timeout=30)


@pytest.fixture
def customers(database_url):
    rich = run(make_customer(database_url, 10**9))
    poor = run(make_customer(database_url, 1_000))
    return rich.key, poor.key


CHAT_CASES = [  # (method, path, who: rich|poor|none|bogus, body, status, code)
    ("POST", "/v1/chat/completions", "rich", {"messages": HELLO}, 400, None),
    ("POST", "/v1/chat/completions", "rich", {"model": "gpt-4o", "messages": []}, 400, None),
    ("POST", "/v1/responses", "rich", {"model": "gpt-4o-mini", "input": "hi",
                                       "previous_response_id": "resp_1"}, 400, None),
    ("POST", "/v1/chat/completions", "none", CHAT, 401, None),
    ("POST", "/v1/chat/completions", "bogus", CHAT, 401, "invalid_api_key"),
    ("POST", "/v1/responses", "none", {"model": "gpt-4o-mini", "input": "hi"}, 401, None),
    ("GET", "/v1/models", "bogus", None, 401, "invalid_api_key"),
    ("POST", "/v1/chat/completions", "poor", CHAT, 402, "insufficient_credit"),
    ("POST", "/v1/responses", "poor", {"model": "gpt-4o-mini", "input": "hi"}, 402,
     "insufficient_credit"),
    ("POST", "/v1/chat/completions", "rich", {"model": "gpt-9", "messages": HELLO}, 404,
     "model_not_found"),
    ("GET", "/v1/models/gpt-9", "rich", None, 404, None),
    ("GET", "/v1/nothing", "rich", None, 404, None),
    ("GET", "/v1/chat/completions", "rich", None, 405, None),
]


def key_of(who: str, customers) -> str | None:
    return {"rich": customers[0], "poor": customers[1], "none": None,
            "bogus": "mtai-not-a-key"}[who]


@pytest.mark.parametrize(("method", "path", "who", "body", "status", "code"), CHAT_CASES,
                         ids=[f"{c[4]}-{c[0]}{c[1]}-{c[2]}" for c in CHAT_CASES])
def test_chat_errors(server, customers, method, path, who, body, status, code):
    error = conforms(send(method, server.url + path, key_of(who, customers), body), status)
    if code:
        assert error["code"] == code, error


def test_503_without_a_provider(make_settings, customers):
    with ThreadedServer(create_app(make_settings(chat={"builtin_local_model": False}))) as live:
        for path, body in (("/v1/chat/completions", CHAT),
                           ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"})):
            error = conforms(send("POST", live.url + path, customers[0], body), 503)
            assert error["code"] == "no_provider", error


IMAGE_CASES = [  # (body changes, who, status)
    ({"size": "big"}, "rich", 400),
    ({"n": 9}, "rich", 400),
    ({}, "none", 401),
    ({"n": 1}, "poor", 402),  # 1,000 nano; an image costs 1,500,000
    ({"model": "juggernaut"}, "rich", 503),  # known to the catalog, not installed
]


@pytest.mark.parametrize(("changes", "who", "status"), IMAGE_CASES,
                         ids=[f"{c[2]}-{c[1]}" for c in IMAGE_CASES])
def test_image_errors(image_settings, serve, customers, changes, who, status):
    server = serve(image_settings(), workers=False)
    body = {"model": "realvision", "prompt": "a harbour", "size": "256x256", **changes}
    conforms(send("POST", server.url + "/v1/images/generations", key_of(who, customers), body),
             status)


SPEECH_CASES = [  # (body changes, who, status)
    ({"voice": "robot"}, "rich", 400),
    ({"input": "x" * 4097}, "rich", 400),
    ({"model": "tts-9"}, "rich", 400),
    ({}, "none", 401),
    ({}, "bogus", 401),
    ({"input": "b" * 100}, "poor", 402),  # 100 characters at 1,000 nano each
]


@pytest.mark.parametrize(("changes", "who", "status"), SPEECH_CASES,
                         ids=[f"{c[2]}-{c[1]}-{i}" for i, c in enumerate(SPEECH_CASES)])
def test_speech_errors(speech_settings, customers, changes, who, status):
    """Audio bytes are not JSON; the refusals of /v1/audio/speech are OpenAI envelopes."""
    with ThreadedServer(create_app(speech_settings())) as live:
        conforms(send("POST", live.url + "/v1/audio/speech", key_of(who, customers),
                      {**SPEECH, **changes}), status)
