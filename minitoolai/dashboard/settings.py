"""Configuration of dashboard (filled in by the dashboard capability)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DashboardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
