"""Fixtures for speech: a fake OpenAI speech upstream, the server configured to use it, and
helpers that decode the audio that comes back."""

from __future__ import annotations

import io

import av
import pytest

from minitoolai.app import create_app
from tests.servers import ThreadedServer
from tests.speech.fake_upstream import FakeSpeechUpstream

PCM_RATE = 24_000


@pytest.fixture(scope="session")
def speech_upstream():
    with FakeSpeechUpstream() as fake:
        yield fake


@pytest.fixture
def speech_settings(make_settings, speech_upstream):
    def make(**overrides):
        providers = {"openai": {"base_url": speech_upstream.base_url,
                                "api_key": speech_upstream.api_key, "read_timeout": 2}}
        chat = {"providers": providers, "builtin_local_model": False}
        chat.update(overrides.pop("chat", {}))
        return make_settings(chat=chat, **overrides)
    return make


@pytest.fixture
def server(speech_settings):
    with ThreadedServer(create_app(speech_settings())) as live:
        yield live


def decode(data: bytes, fmt: str) -> tuple[float, int, str]:
    """(duration in seconds, sample rate, codec) of the audio, decoded for real."""
    if fmt == "pcm":
        assert len(data) % 2 == 0
        return len(data) / 2 / PCM_RATE, PCM_RATE, "pcm_s16le"
    container = av.open(io.BytesIO(data))
    samples = 0
    rate = 0
    codec = container.streams.audio[0].codec_context.name
    for frame in container.decode(audio=0):
        samples += frame.samples
        rate = frame.sample_rate
    container.close()
    assert rate > 0, f"no audio decoded from {len(data)} bytes of {fmt}"
    return samples / rate, rate, codec


def envelope_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]
