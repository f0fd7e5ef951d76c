"""The encoders and the engine, without the server: streaming output, exact formats."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from minitoolai.speech.audio import FORMATS, Encoder, encode_all, missing_encoders, wav_header
from minitoolai.speech.engines.espeak import EspeakEngine, find_library, load_library
from tests.speech.conftest import decode

RATE = 22_050


def tone(seconds: float) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


def test_every_format_has_an_encoder():
    assert missing_encoders() == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_encoders_keep_the_duration(fmt):
    pcm = tone(2.0)
    data = encode_all(fmt, RATE, [pcm[i:i + 8820] for i in range(0, len(pcm), 8820)])
    duration, _, _ = decode(data, fmt)
    assert abs(duration - 2.0) < 0.1, duration


@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac", "wav", "pcm"])
def test_encoders_stream_before_the_end(fmt):
    encoder = Encoder(fmt, RATE)
    pcm = tone(3.0)
    out = [encoder.feed(pcm[i:i + 4410]) for i in range(0, len(pcm), 4410)]
    out.append(encoder.finish())
    assert sum(1 for part in out[:-1] if part) > 5  # bytes came out while PCM went in


def test_wav_header_is_a_streaming_header():
    head = wav_header(RATE)
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE" and len(head) == 44
    assert struct.unpack("<I", head[40:44])[0] == 0xFFFFFFFF
    assert struct.unpack("<I", head[24:28])[0] == RATE


def test_tempo_stretches_without_the_engine():
    data = encode_all("wav", RATE, [tone(1.0)], tempo=0.5)
    assert abs(decode(data, "wav")[0] - 2.0) < 0.05


def test_engine_speaks_in_chunks_and_stops_when_asked():
    engine = EspeakEngine(load_library(*find_library(None, None)), "en-us", {}, 200)
    chunks: list[bytes] = []
    engine.start("One two three four five six seven eight nine ten. " * 5,
                 engine.resolve("en-us"), 1.0, lambda pcm: chunks.append(pcm) or True).result()
    assert len(chunks) > 10
    assert all(len(c) % 2 == 0 for c in chunks)
    full = sum(map(len, chunks))
    stopped: list[bytes] = []
    engine.start("One two three four five six seven eight nine ten. " * 5,
                 engine.resolve("en-us"), 1.0,
                 lambda pcm: stopped.append(pcm) or len(stopped) < 2).result()
    assert len(stopped) == 2 and sum(map(len, stopped)) < full
