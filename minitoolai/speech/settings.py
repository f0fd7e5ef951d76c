"""Configuration of speech: the local engines (eSpeak NG, Piper), the upstream models, and
their prices.

Prices are USD per 1M input characters, as decimal strings, so that every charge is an exact
whole number of nanodollars per character (see minitoolai.money.per_unit_nano).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from minitoolai.money import MoneyFormatError, per_unit_nano


def _price(value: str) -> str:
    """A price per 1M characters must be a whole number of nanodollars per character."""
    try:
        per_unit_nano(value)
    except MoneyFormatError as exc:
        raise ValueError(str(exc)) from None
    return value


AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]

# OpenAI's voices, per model family (platform.openai.com text-to-speech guide).
TTS1_VOICES = ["alloy", "ash", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer"]
MINI_TTS_VOICES = TTS1_VOICES + ["ballad", "verse", "marin", "cedar"]


class UpstreamSpeechModel(BaseModel):
    """A speech model served by an OpenAI-compatible upstream (POST {base_url}/audio/speech)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    provider: str = "openai"  # a name in [chat.providers]; its base_url and api_key are used
    upstream_model: str | None = None  # name sent upstream; default: id
    price: str  # USD per 1M input characters
    voices: list[str] = Field(default_factory=lambda: list(TTS1_VOICES))
    instructions: bool = False  # whether the model takes `instructions` (gpt-4o-mini-tts)
    enabled: bool = True

    _check_price = field_validator("price")(_price)


def _default_upstream_models() -> list[UpstreamSpeechModel]:
    # OpenAI's public prices: tts-1 $15 and tts-1-hd $30 per 1M characters. gpt-4o-mini-tts
    # is billed by OpenAI in tokens (~$0.015 per minute of audio by their own estimate, which
    # at ~1,000 characters a minute is ~$15 per 1M characters): we charge it like tts-1.
    return [
        UpstreamSpeechModel(id="tts-1", price="15.00"),
        UpstreamSpeechModel(id="tts-1-hd", price="30.00"),
        UpstreamSpeechModel(id="gpt-4o-mini-tts", price="15.00", voices=list(MINI_TTS_VOICES),
                            instructions=True),
    ]


def _default_voice_aliases() -> dict[str, str]:
    # OpenAI's voice names on the local engine, so that SDK code written for tts-1 runs
    # unchanged against espeak-ng: English (America) with eSpeak's male/female variants.
    return {
        "alloy": "en-us+f3", "ash": "en-us+m3", "ballad": "en-gb+m2", "coral": "en-us+f4",
        "echo": "en-us+m1", "fable": "en-gb+m4", "onyx": "en-us+m7", "nova": "en-us+f2",
        "sage": "en-us+f5", "shimmer": "en-us+f1", "verse": "en-gb+m1", "marin": "en-us+f2",
        "cedar": "en-us+m2",
    }


class PiperVoiceSettings(BaseModel):
    """A Piper voice from local files (an .onnx model and its .onnx.json config)."""

    model_config = ConfigDict(extra="forbid")

    id: str  # the voice name clients send, e.g. "en_US-lessac-medium"
    model: Path
    config: Path | None = None  # default: the model path + ".json"
    speaker: int | None = Field(None, ge=0)  # for multi-speaker voices


class SpeechSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_input_characters: int = Field(4096, ge=1)
    default_model: str = "espeak-ng"  # when /api/texttospeech/ names no model
    default_format: AudioFormat = "mp3"  # when a request names no format
    hold_ttl_seconds: int = Field(600, ge=10)  # longer than any synthesis can take

    # ---- eSpeak NG, in-process, no download ------------------------------------------------
    espeak: bool = True  # serve the local `espeak-ng` model
    espeak_model_id: str = "espeak-ng"
    espeak_price: str = "1.00"  # USD per 1M characters: it costs the operator CPU only
    espeak_library: Path | None = None  # default: espeakng-loader's, else libespeak-ng.so.1
    espeak_data: Path | None = None  # the espeak-ng-data folder that goes with the library
    espeak_default_voice: str = "en-us"
    espeak_chunk_ms: int = Field(200, ge=20, le=5000)  # audio handed on per engine callback
    voice_aliases: dict[str, str] = Field(default_factory=_default_voice_aliases)

    # ---- Piper voices from local paths -------------------------------------------------------
    piper_model_id: str = "piper"
    piper_price: str = "2.00"
    piper_voices: list[PiperVoiceSettings] = Field(default_factory=list)
    piper_threads: int = Field(1, ge=1)  # syntheses run at once

    _check_prices = field_validator("espeak_price", "piper_price")(_price)

    # ---- OpenAI-compatible upstreams ------------------------------------------------------
    upstream_models: list[UpstreamSpeechModel] = Field(default_factory=_default_upstream_models)
