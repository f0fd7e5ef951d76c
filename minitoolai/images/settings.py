"""Configuration of images (filled in by the images capability)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ImagesSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
