"""What every local engine offers: its voices, its sample rate, and a blocking `synthesize`
that hands PCM to a callback as it is produced (run in a worker thread, never on the loop)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

PcmCallback = Callable[[bytes], bool]  # s16le mono PCM; returning False stops the engine


class EngineError(Exception):
    """The engine failed to speak (turned into a 5xx by the service)."""


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    name: str
    language: str | None = None
    gender: str | None = None
    alias_of: str | None = None  # set for names that map onto another voice
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def public(self) -> dict:
        out = {"id": self.id, "name": self.name, "language": self.language}
        if self.gender:
            out["gender"] = self.gender
        if self.alias_of:
            out["alias_of"] = self.alias_of
        out.update(self.extra)
        return out


class LocalEngine(Protocol):
    def voices(self) -> list[Voice]:
        """Every voice a request may name (aliases included)."""

    def resolve(self, voice: str) -> str | None:
        """The engine's own name for a voice a client sent, or None when it is unknown."""

    def sample_rate(self, voice: str) -> int:
        """The rate of the PCM that `synthesize` produces for this (resolved) voice."""

    def tempo(self, speed: float) -> float:
        """What is left of `speed` for the encoder to apply after the engine's own rate."""

    def start(self, text: str, voice: str, speed: float, on_pcm: PcmCallback) -> Future:
        """Speak `text` on the engine's own thread(s), calling `on_pcm` there with each chunk
        of audio as it is made; the future completes when the engine is done."""
