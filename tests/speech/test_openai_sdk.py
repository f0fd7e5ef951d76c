"""The official openai SDK's audio.speech.create against /v1, on the live server."""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from tests.conftest import assert_ledger_ok, make_customer
from tests.speech.conftest import decode
from tests.speech.fake_upstream import audio_for
from tests.speech.helpers import account_state

CREDIT = 10**9


def client_for(server, customer) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)


async def test_sdk_speech_create_on_the_local_engine(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    client = client_for(server, customer)
    text = "The quick brown fox jumps over the lazy dog."
    charged = 0
    for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm"):
        audio = client.audio.speech.create(model="espeak-ng", voice="alloy", input=text,
                                           response_format=fmt)
        duration, _, _ = decode(audio.content, fmt)
        assert duration > 1.5, (fmt, duration)
        charged += len(text) * 1_000
    assert await account_state(database_url, customer.account_id) == (CREDIT - charged, 0)
    await assert_ledger_ok(database_url)


async def test_sdk_streaming_response_and_file(server, database_url, tmp_path):
    customer = await make_customer(database_url, CREDIT)
    client = client_for(server, customer)
    chunks = []
    with client.audio.speech.with_streaming_response.create(
            model="espeak-ng", voice="fr-fr", input="Bonjour tout le monde. " * 20,
            response_format="wav", speed=1.5) as response:
        assert response.headers["content-type"] == "audio/wav"
        for chunk in response.iter_bytes():
            chunks.append(chunk)
    assert len(chunks) > 1  # it arrived in pieces
    assert decode(b"".join(chunks), "wav")[0] > 5
    path = tmp_path / "speech.mp3"
    client.audio.speech.create(model="espeak-ng", voice="nova",
                               input="Saved to a file.").write_to_file(path)
    assert decode(path.read_bytes(), "mp3")[0] > 0.5


async def test_sdk_against_the_upstream_model(server, speech_upstream, database_url):
    customer = await make_customer(database_url, CREDIT)
    client = client_for(server, customer)
    audio = client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral",
                                       input="Through the gateway.",
                                       instructions="Whisper.", response_format="aac")
    sent = speech_upstream.requests[-1]["body"]
    assert sent["instructions"] == "Whisper." and sent["model"] == "gpt-4o-mini-tts"
    assert audio.content == audio_for(sent)
    assert await account_state(database_url, customer.account_id) == \
        (CREDIT - len("Through the gateway.") * 15_000, 0)
    await assert_ledger_ok(database_url)


async def test_sdk_errors(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    client = client_for(server, customer)
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="espeak-ng", voice="nobody", input="Hi")
    assert info.value.status_code == 400
    assert info.value.body["param"] == "voice"
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.speech.create(model="espeak-ng", voice="alloy", input="Hi", speed=5)
    assert info.value.body["param"] == "speed"
    with pytest.raises(openai.AuthenticationError):
        OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0) \
            .audio.speech.create(model="espeak-ng", voice="alloy", input="Hi")
    assert await account_state(database_url, customer.account_id) == (CREDIT, 0)
