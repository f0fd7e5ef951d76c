"""Start and stop of images: builds its service and attaches it to the runtime."""

from __future__ import annotations


def extend_catalog(settings, catalog) -> None:
    """Add or adjust this capability's catalog entries (called at start and by the CLI)."""


def availability(settings, model) -> tuple[bool, str]:
    """Whether this server can serve the model, from configuration alone, and why not."""
    return False, "not implemented yet"


async def start(runtime) -> None:
    """Build the images service; set runtime.images."""
    extend_catalog(runtime.settings, runtime.catalog)


async def stop(runtime) -> None:
    """Release what start() opened."""


async def run_standalone_worker(settings) -> None:
    """`minitoolai worker`: drain the image queue until interrupted."""
    raise NotImplementedError("image workers are not implemented yet")
