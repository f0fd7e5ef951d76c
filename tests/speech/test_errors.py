"""Every refusal of a speech request: its status, its OpenAI envelope, and no charge."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from tests.conftest import assert_ledger_ok, make_customer
from tests.servers import ThreadedServer
from tests.speech.conftest import decode, envelope_of
from tests.speech.helpers import account_state, usage_rows

CREDIT = 10**9
OK = {"model": "espeak-ng", "input": "Hello.", "voice": "alloy", "response_format": "mp3"}

# (body changes, param, code) on /v1/audio/speech; None deletes the field
V1_CASES = [
    ({"input": "x" * 4097}, "input", "string_above_max_length"),
    ({"input": "   "}, "input", "empty_input"),
    ({"input": None}, "input", "missing_required"),
    ({"input": 42}, "input", "invalid_type"),
    ({"voice": "robot"}, "voice", "invalid_voice"),
    ({"voice": "en-us+nosuchvariant"}, "voice", "invalid_voice"),
    ({"voice": None}, "voice", "missing_required"),
    ({"response_format": "ogg"}, "response_format", "invalid_format"),
    ({"model": "tts-9"}, "model", "model_not_found"),
    ({"model": "gpt-4o-mini"}, "model", "model_not_found"),  # a chat model
    ({"model": None}, "model", "missing_required"),
    ({"speed": 0.24}, "speed", "out_of_range"),
    ({"speed": 4.01}, "speed", "out_of_range"),
    ({"speed": "fast"}, "speed", "invalid_type"),
    ({"speed": True}, "speed", "invalid_type"),
    ({"instructions": "Speak cheerfully."}, "instructions", "unsupported_parameter"),
    ({"model": "tts-1", "voice": "ballad"}, "voice", "invalid_voice"),  # gpt-4o-mini-tts only
    ({"stream_format": "sse"}, "stream_format", "unsupported_value"),
]

SEED_CASES = [
    ({"input": "y" * 4097}, "input", "string_above_max_length"),
    ({"voice": "klingon"}, "voice", "invalid_voice"),
    ({"format": "mp4"}, "format", "invalid_format"),
    ({"model": "no-such-model"}, "model", "model_not_found"),
    ({"speed": 10}, "speed", "out_of_range"),
]


def _body(base: dict, changes: dict) -> dict:
    body = dict(base)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


async def test_invalid_requests_are_400_and_free(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    for path in ("/v1/audio/speech", "/v1/audio/speech/"):
        for changes, param, code in V1_CASES:
            response = requests.post(server.url + path, headers=customer.headers,
                                     json=_body(OK, changes))
            assert response.status_code == 400, (changes, response.text)
            error = envelope_of(response)
            assert (error["type"], error["param"], error["code"]) == \
                ("invalid_request_error", param, code), (changes, error)
            assert error["message"]
    seed = {"model": "espeak-ng", "input": "Hello.", "voice": "en-us", "format": "wav"}
    for path in ("/api/texttospeech/", "/api/texttospeech"):
        for changes, param, code in SEED_CASES:
            response = requests.post(server.url + path, headers=customer.headers,
                                     json=_body(seed, changes))
            assert response.status_code == 400, (changes, response.text)
            error = envelope_of(response)
            assert (error["param"], error["code"]) == (param, code), (changes, error)
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    assert await usage_rows(database_url, customer.account_id) == []
    await assert_ledger_ok(database_url)


async def test_4096_characters_is_the_limit_not_an_error(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json=_body(OK, {"input": "a" * 4096, "response_format": "pcm"}))
    assert response.status_code == 200, response.text
    assert await account_state(database_url, customer.account_id) == (CREDIT - 4096 * 1000, 0)
    await assert_ledger_ok(database_url)


async def test_bodies_that_are_not_json_objects(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    for data in (b"{not json", b"", b"[1, 2]", b'"text"'):
        response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                                 data=data)
        assert response.status_code == 400, (data, response.text)
        assert envelope_of(response)["type"] == "invalid_request_error"
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)


async def test_authentication_and_credit(server, database_url):
    response = requests.post(server.url + "/v1/audio/speech", json=OK)
    assert response.status_code == 401
    assert envelope_of(response)["type"] == "authentication_error"
    response = requests.post(server.url + "/api/texttospeech/", json=OK,
                             headers={"Authorization": "Bearer mtai-not-a-key"})
    assert response.status_code == 401
    assert envelope_of(response)["code"] == "invalid_api_key"

    # 100 characters at 1,000 nano each need 100,000 nano; the account has 99,999
    poor = await make_customer(database_url, 99_999)
    response = requests.post(server.url + "/v1/audio/speech", headers=poor.headers,
                             json=_body(OK, {"input": "b" * 100}))
    assert response.status_code == 402, response.text
    assert envelope_of(response)["type"] == "insufficient_quota"
    assert await account_state(database_url, poor.account_id) == (99_999, 0)
    # exactly enough is enough
    response = requests.post(server.url + "/v1/audio/speech", headers=poor.headers,
                             json=_body(OK, {"input": "b" * 99}))
    assert response.status_code == 200
    assert await account_state(database_url, poor.account_id) == (999, 0)
    await assert_ledger_ok(database_url)


async def test_unconfigured_upstream_is_503_and_free(make_settings, database_url):
    # no OpenAI key and the default base URL: the upstream models exist but cannot be served
    settings = make_settings(chat={"builtin_local_model": False})
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json=_body(OK, {"model": "tts-1"}))
        assert response.status_code == 503, response.text
        error = envelope_of(response)
        assert (error["type"], error["code"]) == ("service_unavailable", "model_unavailable")
        listing = requests.get(live.url + "/api/voices/").json()["data"]
        tts1 = next(m for m in listing if m["model"] == "tts-1")
        assert tts1["available"] is False and "OpenAI API key" in tts1["note"]
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    await assert_ledger_ok(database_url)


async def test_disabled_local_engine_is_unknown(make_settings, database_url):
    settings = make_settings(chat={"builtin_local_model": False}, speech={"espeak": False})
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json=OK)
        assert response.status_code == 400
        assert envelope_of(response)["param"] == "model"
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)




NO_AUDIO = ("...", "?!", "—", " - ", ".")
SPEEDS = (0.25, 0.26, 1.0, 3.99)


def _no_audio_then_audio(server, customer) -> None:
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        for speed in SPEEDS:
            for text in NO_AUDIO:
                response = requests.post(server.url + "/v1/audio/speech",
                                         headers=customer.headers, json={
                                             "model": "espeak-ng", "input": text,
                                             "voice": "alloy", "response_format": fmt,
                                             "speed": speed})
                assert response.status_code == 400, (fmt, speed, text, response.content)
                assert envelope_of(response) == {
                    "message": "the input produced no audio (nothing in it is spoken at this"
                               " speed); nothing was charged",
                    "type": "invalid_request_error", "param": "input", "code": "no_audio"}
    # the same formats and speeds with words in them are audio, and are charged
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        for speed in SPEEDS:
            spoken = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                                   json={"model": "espeak-ng", "input": "Hi.", "voice": "alloy",
                                         "response_format": fmt, "speed": speed})
            assert spoken.status_code == 200, (fmt, speed)
            assert decode(spoken.content, fmt)[0] > 0


async def test_input_that_yields_no_audio_is_400_and_free(speech_settings, database_url):
    """Punctuation alone makes eSpeak NG produce only a pause (silence, or the faint tail of
    what it said before, depending on earlier requests in this process), which at the
    slowest and fastest speeds the tempo filter can swallow whole: in every format the
    local engine answers 400 no_audio, not a charged empty (mp3, opus, aac, pcm),
    header-only (wav, flac) or silent file."""
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(speech_settings(rate_limit_per_minute=0))) as server:
        _no_audio_then_audio(server, customer)
    rows = await usage_rows(database_url, customer.account_id)
    refused = [r for r in rows if r.status == "error"]
    assert len(refused) == 6 * len(SPEEDS) * len(NO_AUDIO)
    assert all(r.cost == 0 for r in refused)
    assert [r.cost for r in rows if r.status == "ok"] == [3 * 1_000] * 6 * len(SPEEDS)
    assert await account_state(database_url, customer.account_id) == \
        (CREDIT - 6 * len(SPEEDS) * 3 * 1_000, 0)
    await assert_ledger_ok(database_url)
