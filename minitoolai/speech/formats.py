"""The audio formats served, and their content types (no dependencies: the catalog, the
validation and `minitoolai models` need them without PyAV installed)."""

from __future__ import annotations

PCM_RATE = 24_000  # OpenAI's pcm: 24 kHz, 16-bit little-endian, mono
OPUS_RATE = 48_000  # the Opus rates do not include the engines' 22.05 kHz

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
FORMATS = tuple(CONTENT_TYPES)


def local_engine_missing() -> str | None:
    """Why the local engines cannot run here (PyAV or numpy absent), or None."""
    try:
        import av  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as exc:
        return f"{exc.name} is not installed: pip install 'minitoolai[speech]'"
    return None
