"""The OpenAI-compatible upstream provider against a fake upstream on loopback: what is
forwarded, what is relayed, what is charged, and each way the upstream can fail."""

from __future__ import annotations

import pytest
import requests

from minitoolai.app import create_app
from tests.conftest import assert_ledger_ok, make_customer
from tests.servers import ThreadedServer
from tests.speech.conftest import envelope_of
from tests.speech.fake_upstream import audio_for
from tests.speech.helpers import account_state, usage_rows

CREDIT = 10**9


def _last_request(upstream) -> dict:
    return upstream.requests[-1]


async def test_tts1_is_forwarded_and_relayed_byte_for_byte(server, speech_upstream,
                                                           database_url):
    customer = await make_customer(database_url, CREDIT)
    text = "Relayed from the upstream, café included."
    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json={"model": "tts-1", "input": text, "voice": "nova",
                                   "response_format": "opus", "speed": 1.25})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/ogg"
    sent = _last_request(speech_upstream)
    assert sent["authorization"] == "Bearer " + speech_upstream.api_key
    assert sent["body"] == {"model": "tts-1", "input": text, "voice": "nova",
                            "response_format": "opus", "speed": 1.25}
    assert response.content == audio_for(sent["body"])
    # tts-1: $15 per 1M characters = 15,000 nano per character
    assert await account_state(database_url, customer.account_id) == \
        (CREDIT - len(text) * 15_000, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.endpoint, r.model, r.characters, r.cost, r.status) for r in rows] == \
        [("/v1/audio/speech", "tts-1", len(text), len(text) * 15_000, "ok")]
    await assert_ledger_ok(database_url)


async def test_seed_route_to_hd_and_instructions_to_mini_tts(server, speech_upstream,
                                                             database_url):
    customer = await make_customer(database_url, CREDIT)
    response = requests.post(server.url + "/api/texttospeech/", headers=customer.headers,
                             json={"model": "tts-1-hd", "input": "High definition.",
                                   "voice": "onyx", "format": "flac"})
    assert response.status_code == 200, response.text
    sent = _last_request(speech_upstream)["body"]
    assert sent == {"model": "tts-1-hd", "input": "High definition.", "voice": "onyx",
                    "response_format": "flac", "speed": 1.0}
    assert response.content == audio_for(sent)

    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json={"model": "gpt-4o-mini-tts", "input": "Cheerful.",
                                   "voice": "ballad", "instructions": "Speak cheerfully."})
    assert response.status_code == 200, response.text
    sent = _last_request(speech_upstream)["body"]
    assert sent["instructions"] == "Speak cheerfully." and sent["response_format"] == "mp3"
    expected = len("High definition.") * 30_000 + len("Cheerful.") * 15_000
    assert await account_state(database_url, customer.account_id) == (CREDIT - expected, 0)
    await assert_ledger_ok(database_url)


async def test_configured_upstream_model_name_and_price(speech_settings, speech_upstream,
                                                        database_url):
    settings = speech_settings(speech={"upstream_models": [
        {"id": "house-voice", "upstream_model": "tts-1-hd", "price": "20.5",
         "voices": ["alloy"]}]})
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "house-voice", "input": "Twelve chars",
                                       "voice": "alloy", "response_format": "wav"})
        assert response.status_code == 200, response.text
        assert _last_request(speech_upstream)["body"]["model"] == "tts-1-hd"
        # the default upstream models were replaced by the configured list
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "tts-1", "input": "x", "voice": "alloy"})
        assert response.status_code == 400
    assert await account_state(database_url, customer.account_id) == (CREDIT - 12 * 20_500, 0)
    await assert_ledger_ok(database_url)


@pytest.mark.parametrize("directive, status, error_type", [
    ("[fail:500]", 502, "upstream_error"),
    ("[fail:400]", 502, "upstream_error"),
    ("[fail:429]", 502, "upstream_error"),
    ("[hang]", 504, "upstream_timeout"),
    ("[json200]", 502, "upstream_error"),  # a 200 that is not audio is not served as audio
])
async def test_upstream_failures_are_answered_and_free(server, database_url, directive,
                                                       status, error_type):
    customer = await make_customer(database_url, CREDIT)
    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json={"model": "tts-1", "input": f"Fail {directive}",
                                   "voice": "alloy"})
    assert response.status_code == status, response.text
    error = envelope_of(response)
    assert error["type"] == error_type
    if directive.startswith("[fail"):
        assert "upstream says" in error["message"]
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.status, r.cost) for r in rows] == [("error", 0)]
    await assert_ledger_ok(database_url)


async def test_wrong_upstream_key_is_a_502(speech_settings, database_url):
    settings = speech_settings()
    settings.chat.providers["openai"].api_key = "sk-wrong"
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "tts-1", "input": "Hi", "voice": "alloy"})
    assert response.status_code == 502
    assert "Incorrect API key" in envelope_of(response)["message"]
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)


async def test_unreachable_upstream_is_a_502(speech_settings, database_url):
    from tests.servers import free_port

    settings = speech_settings()
    settings.chat.providers["openai"].base_url = f"http://127.0.0.1:{free_port()}/v1"
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "tts-1", "input": "Hi", "voice": "alloy"})
    assert response.status_code == 502
    assert "could not be reached" in envelope_of(response)["message"]
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    await assert_ledger_ok(database_url)


async def test_upstream_cut_mid_stream_truncates_and_is_free(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json={"model": "tts-1", "input": "Cut [cut]", "voice": "alloy"},
                             stream=True)
    assert response.status_code == 200  # the headers went out with the first bytes
    received = b""
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in response.iter_content(chunk_size=None):
            received += chunk
    assert 0 < len(received) < 65536
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.status, r.cost) for r in rows] == [("error", 0)]
    await assert_ledger_ok(database_url)


async def test_instructions_are_bounded(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    response = requests.post(server.url + "/v1/audio/speech", headers=customer.headers,
                             json={"model": "gpt-4o-mini-tts", "input": "Hi", "voice": "ash",
                                   "instructions": "x" * 4097})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "instructions"
    await assert_ledger_ok(database_url)
