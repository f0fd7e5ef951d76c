"""Acceptance of the local engine (eSpeak NG, no download) through the live server: audio in
every format that decodes, grows with the input, in several languages, at every speed."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import assert_ledger_ok, make_customer
from tests.speech.conftest import decode
from tests.speech.helpers import account_state, usage_rows

CODECS = {"mp3": "mp3", "opus": "opus", "aac": "aac", "flac": "flac", "wav": "pcm_s16le",
          "pcm": "pcm_s16le"}
CONTENT_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
                 "flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm"}
ESPEAK_NANO_PER_CHAR = 1_000  # the default $1.00 per 1M characters

SHORT = "Hello there."
LONG = "Hello there. This second sentence makes the recording much longer than the first."


def speak(url: str, headers: dict, **body) -> requests.Response:
    return requests.post(url + "/v1/audio/speech", headers=headers, json=body, timeout=60)


async def test_every_format_decodes_and_grows_with_the_input(server, database_url):
    customer = await make_customer(database_url, 10**9)
    charged = 0
    for fmt in CODECS:
        durations = []
        for text in (SHORT, LONG):
            response = speak(server.url, customer.headers, model="espeak-ng", input=text,
                             voice="alloy", response_format=fmt)
            assert response.status_code == 200, response.text
            assert response.headers["content-type"] == CONTENT_TYPES[fmt]
            assert "content-length" not in response.headers  # streamed, as produced
            duration, rate, codec = decode(response.content, fmt)
            assert codec.startswith(CODECS[fmt]), codec  # FFmpeg decodes mp3 as mp3float
            assert rate == {"opus": 48_000, "pcm": 24_000}.get(fmt, 22_050)
            durations.append(duration)
            charged += len(text) * ESPEAK_NANO_PER_CHAR
        assert 0.5 < durations[0] < durations[1] / 2, (fmt, durations)
    assert await account_state(database_url, customer.account_id) == (10**9 - charged, 0)
    await assert_ledger_ok(database_url)


LANGUAGES = {
    "en-us": ("Good morning.", "Good morning. The weather is lovely today, let us go for a walk."),
    "fr-fr": ("Bonjour.", "Bonjour. Il fait très beau aujourd'hui, allons nous promener."),
    "de": ("Guten Morgen.", "Guten Morgen. Das Wetter ist heute schön, gehen wir spazieren."),
}


async def test_languages_through_the_seed_route_with_requests(server, database_url):
    customer = await make_customer(database_url, 10**9)
    audio = {}
    for voice, texts in LANGUAGES.items():
        durations = []
        for text in texts:
            # the seed's client style: requests.post(API_Url, headers=headers, json=data)
            data = {"model": "espeak-ng", "input": text, "voice": voice, "format": "wav",
                    "speed": 1.0}
            response = requests.post(server.url + "/api/texttospeech/", headers=customer.headers,
                                     json=data, stream=True)
            assert response.status_code == 200, response.text
            body = b"".join(response.iter_content(chunk_size=None))
            durations.append(decode(body, "wav")[0])
            audio[(voice, text)] = body
        assert durations[0] < durations[1] / 2, (voice, durations)
    # the same words in another voice are other sounds
    assert audio[("en-us", LANGUAGES["en-us"][0])] != audio[("fr-fr", LANGUAGES["fr-fr"][0])]
    same = requests.post(server.url + "/api/texttospeech", headers=customer.headers,
                         json={"input": "Bonjour.", "voice": "en-us", "format": "wav"})
    assert same.content != audio[("fr-fr", "Bonjour.")]
    await assert_ledger_ok(database_url)


async def test_seed_route_defaults_and_both_paths(server, database_url):
    customer = await make_customer(database_url, 10**9)
    for path in ("/api/texttospeech/", "/api/texttospeech"):
        response = requests.post(server.url + path, headers=customer.headers,
                                 json={"input": "Only the input."})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "audio/mpeg"  # default format
        assert decode(response.content, "mp3")[0] > 0.5
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.endpoint, r.model, r.characters, r.status) for r in rows] == [
        ("/api/texttospeech/", "espeak-ng", 15, "ok")] * 2
    await assert_ledger_ok(database_url)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
async def test_speed_changes_the_duration(server, database_url, fmt):
    customer = await make_customer(database_url, 10**9)
    durations = {}
    for speed in (0.25, 1, 2, 4):
        response = speak(server.url, customer.headers, model="espeak-ng", input=LONG,
                         voice="en-us", response_format=fmt, speed=speed)
        assert response.status_code == 200, response.text
        durations[speed] = decode(response.content, fmt)[0]
    # eSpeak's own rate for 1..4; below its slowest rate the encoder's atempo stretches
    assert durations[4] < durations[2] < durations[1] < durations[0.25]
    assert 3.0 < durations[0.25] / durations[1] < 5.0, durations
    assert 1.5 < durations[1] / durations[2] < 2.5, durations


async def test_voices_listing(server):
    for path in ("/api/voices/", "/api/voices"):
        response = requests.get(server.url + path)
        assert response.status_code == 200
        models = {m["model"]: m for m in response.json()["data"]}
        espeak = models["espeak-ng"]
        assert espeak["available"] is True
        assert espeak["pricing"] == {"per_1m_characters": "1.00"}
        assert set(espeak["formats"]) == set(CODECS)
        ids = {v["id"] for v in espeak["voices"]}
        assert {"en-us", "fr-fr", "de", "alloy", "nova"} <= ids
        assert len(ids) > 100 and "f3" in espeak["variants"]
        assert models["tts-1"]["available"] is True  # the fake upstream is configured
        assert "ballad" in {v["id"] for v in models["gpt-4o-mini-tts"]["voices"]}
    catalog = requests.get(server.url + "/api/models/").json()["data"]
    speech = {m["id"]: m for m in catalog if m["kind"] == "speech"}
    assert speech["tts-1-hd"]["pricing"] == {"per_1m_characters": "30"}
    assert speech["espeak-ng"]["available"] is True


async def test_variants_and_bare_languages(server, database_url):
    customer = await make_customer(database_url, 10**9)
    bodies = set()
    for voice in ("en", "en-us", "en-us+f3", "EN-US+M7"):
        response = speak(server.url, customer.headers, model="espeak-ng", input=SHORT,
                         voice=voice, response_format="wav")
        assert response.status_code == 200, (voice, response.text)
        bodies.add(response.content)
    assert len(bodies) == 4  # four different voices


async def test_concurrent_requests_get_their_own_audio(server, database_url):
    """eSpeak runs one synthesis at a time on its own thread; requests arriving together
    must each get exactly the audio they would get alone."""
    from concurrent.futures import ThreadPoolExecutor

    customer = await make_customer(database_url, 10**9)
    jobs = [("en-us", "First request, in English."), ("fr-fr", "Deuxième requête, en français."),
            ("de", "Dritte Anfrage, auf Deutsch."), ("en-us+f3", LONG)]

    def one(job):
        voice, text = job
        response = speak(server.url, customer.headers, model="espeak-ng", input=text,
                         voice=voice, response_format="wav")
        assert response.status_code == 200, response.text
        return response.content

    # eSpeak is not bit-for-bit repeatable (a few samples differ between runs), so compare
    # durations: mixed-up or interleaved audio would be far off
    alone = [decode(one(job), "wav")[0] for job in jobs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = [decode(body, "wav")[0] for body in pool.map(one, jobs * 3)]
    for expected_duration, duration in zip(alone * 3, together, strict=True):
        assert abs(duration - expected_duration) < 0.02, (alone, together)
    expected = 4 * sum(len(text) for _, text in jobs) * ESPEAK_NANO_PER_CHAR
    assert await account_state(database_url, customer.account_id) == (10**9 - expected, 0)
    await assert_ledger_ok(database_url)


SYSTEM_LIBRARY = "/lib/x86_64-linux-gnu/libespeak-ng.so.1"


@pytest.mark.skipif(not __import__("os").path.exists(SYSTEM_LIBRARY),
                    reason="Debian's libespeak-ng1 is not installed")
async def test_debian_espeak_ng_as_the_library(speech_settings, database_url):
    from minitoolai.app import create_app
    from tests.servers import ThreadedServer

    settings = speech_settings(speech={"espeak_library": SYSTEM_LIBRARY})
    customer = await make_customer(database_url, 10**9)
    with ThreadedServer(create_app(settings)) as live:
        listing = {m["model"]: m for m in requests.get(live.url + "/api/voices/").json()["data"]}
        assert listing["espeak-ng"]["available"] is True
        durations = []
        for text in ("Hola.", "Hola. ¿Cómo estás? Hace un día precioso para pasear."):
            response = speak(live.url, customer.headers, model="espeak-ng", input=text,
                             voice="es", response_format="opus")
            assert response.status_code == 200, response.text
            durations.append(decode(response.content, "opus")[0])
        assert durations[0] < durations[1] / 2
    await assert_ledger_ok(database_url)
