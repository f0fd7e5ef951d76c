"""Start and stop of the dashboard."""

from __future__ import annotations


async def start(runtime) -> None:
    """Build the dashboard service; set runtime.dashboard."""


async def stop(runtime) -> None:
    """Release what start() opened."""
