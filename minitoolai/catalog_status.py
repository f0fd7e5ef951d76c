"""What `minitoolai models` prints: the catalog with prices and availability, computed
from the configuration alone (no server needs to run)."""

from __future__ import annotations

from minitoolai.catalog import build_catalog
from minitoolai.chat import lifecycle as chat_lifecycle
from minitoolai.config import Settings
from minitoolai.images import lifecycle as images_lifecycle
from minitoolai.money import format_usd
from minitoolai.speech import lifecycle as speech_lifecycle

_AVAILABILITY = {
    "chat": chat_lifecycle.availability,
    "image": images_lifecycle.availability,
    "speech": speech_lifecycle.availability,
}


def price_text(model) -> str:
    if model.kind == "chat":
        return (f"${format_usd(model.input_nano * 1_000_000)} in / "
                f"${format_usd(model.output_nano * 1_000_000)} out per 1M tokens")
    if model.kind == "image":
        return f"${format_usd(model.image_nano)} per image"
    return f"${format_usd(model.input_nano * 1_000_000)} per 1M characters"


def catalog_rows(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    catalog = build_catalog(settings)
    chat_lifecycle.extend_catalog(settings, catalog)
    images_lifecycle.extend_catalog(settings, catalog)
    speech_lifecycle.extend_catalog(settings, catalog)
    rows = []
    for model in catalog:
        available, note = _AVAILABILITY[model.kind](settings, model)
        rows.append((model.id, model.kind, price_text(model), "yes" if available else "no", note))
    return rows
