"""Start and stop of speech: builds its service and attaches it to the runtime."""

from __future__ import annotations


def extend_catalog(settings, catalog) -> None:
    """Add or adjust this capability's catalog entries (called at start and by the CLI)."""


def availability(settings, model) -> tuple[bool, str]:
    """Whether this server can serve the model, from configuration alone, and why not."""
    return False, "not implemented yet"


async def start(runtime) -> None:
    """Build the speech service; set runtime.speech."""
    extend_catalog(runtime.settings, runtime.catalog)


async def stop(runtime) -> None:
    """Release what start() opened."""
