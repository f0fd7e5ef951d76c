"""Piper voices from local paths, with a tiny ONNX voice made by the test (no download)."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from minitoolai.speech import lifecycle
from tests.conftest import assert_ledger_ok, make_customer
from tests.servers import ThreadedServer
from tests.speech.conftest import decode, envelope_of
from tests.speech.helpers import account_state, usage_rows
from tests.speech.tiny_piper import SAMPLE_RATE, write_voice

CREDIT = 10**9


async def test_piper_voice_from_a_local_path(speech_settings, database_url, tmp_path):
    model_path = write_voice(tmp_path / "voices", "tiny-en")
    settings = speech_settings(speech={"piper_voices": [{"id": "tiny-en",
                                                         "model": str(model_path)}]})
    customer = await make_customer(database_url, CREDIT)
    texts = ["Hello.", "Hello. This is a much longer sentence for the tiny voice."]
    with ThreadedServer(create_app(settings)) as live:
        voices = {m["model"]: m for m in requests.get(live.url + "/api/voices/").json()["data"]}
        assert voices["piper"]["available"] is True
        assert voices["piper"]["voices"][0]["id"] == "tiny-en"
        assert voices["piper"]["voices"][0]["sample_rate"] == SAMPLE_RATE
        durations = {}
        for text in texts:
            for speed in (1.0, 2.0):
                response = requests.post(live.url + "/v1/audio/speech",
                                         headers=customer.headers,
                                         json={"model": "piper", "voice": "tiny-en",
                                               "input": text, "response_format": "flac",
                                               "speed": speed})
                assert response.status_code == 200, response.text
                duration, rate, _ = decode(response.content, "flac")
                assert rate == SAMPLE_RATE
                durations[(text, speed)] = duration
        for fmt in ("mp3", "opus", "pcm", "wav"):
            response = requests.post(live.url + "/api/texttospeech/", headers=customer.headers,
                                     json={"model": "piper", "voice": "tiny-en",
                                           "input": texts[0], "format": fmt})
            assert response.status_code == 200
            assert decode(response.content, fmt)[0] > 0.1
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "piper", "voice": "alloy", "input": "Hi"})
        assert response.status_code == 400 and envelope_of(response)["param"] == "voice"
    long, short = texts[1], texts[0]
    assert durations[(long, 1.0)] > 3 * durations[(short, 1.0)]
    assert abs(durations[(long, 2.0)] * 2 - durations[(long, 1.0)]) < 0.05
    charged = (2 * len(short) + 2 * len(long) + 4 * len(short)) * 2_000  # $2.00 per 1M
    assert await account_state(database_url, customer.account_id) == (CREDIT - charged, 0)
    await assert_ledger_ok(database_url)


async def test_missing_piper_files_leave_the_rest_running(speech_settings, database_url,
                                                          tmp_path):
    settings = speech_settings(speech={"piper_voices": [
        {"id": "gone", "model": str(tmp_path / "gone.onnx")}]})
    model = next(m for m in lifecycle.speech_models.speech_models(settings) if m.id == "piper")
    available, note = lifecycle.availability(settings, model)
    assert not available and "gone.onnx" in note
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "piper", "voice": "gone", "input": "Hi"})
        assert response.status_code == 503
        listing = {m["model"]: m for m in requests.get(live.url + "/api/voices/").json()["data"]}
        assert "does not exist" in listing["piper"]["note"]
        response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                 json={"model": "espeak-ng", "voice": "en", "input": "Hi"})
        assert response.status_code == 200
    assert await account_state(database_url, customer.account_id) == (CREDIT - 2 * 1_000, 0)


async def test_engine_failure_is_a_500_and_free(speech_settings, database_url, tmp_path):
    broken = write_voice(tmp_path / "voices", "broken", broken=True)
    settings = speech_settings(speech={"piper_voices": [{"id": "broken", "model": str(broken)}]})
    customer = await make_customer(database_url, CREDIT)
    with ThreadedServer(create_app(settings)) as live:
        for fmt in ("wav", "mp3"):
            response = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                     json={"model": "piper", "voice": "broken",
                                           "input": "This will fail.", "response_format": fmt})
            assert response.status_code == 500, response.text
            error = envelope_of(response)
            assert (error["type"], error["code"]) == ("server_error", "engine_failed")
            assert "speech engine failed" in error["message"]
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.status, r.cost) for r in rows] == [("error", 0)] * 2
    await assert_ledger_ok(database_url)
