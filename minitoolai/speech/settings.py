"""Configuration of speech (filled in by the speech capability)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SpeechSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
