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


def _catalog_with_availability(settings: Settings):
    catalog = build_catalog(settings)
    chat_lifecycle.extend_catalog(settings, catalog)
    images_lifecycle.extend_catalog(settings, catalog)
    speech_lifecycle.extend_catalog(settings, catalog)
    for model in catalog:
        available, note = _AVAILABILITY[model.kind](settings, model)
        yield model, available, note


def catalog_rows(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    return [(model.id, model.kind, price_text(model), "yes" if available else "no", note)
            for model, available, note in _catalog_with_availability(settings)]


def catalog_records(settings: Settings) -> list[dict]:
    """`minitoolai models --json`: exact prices in nanodollars per unit (token, character,
    image) and as decimal USD per 1M units (per image for images)."""
    records = []
    for model, available, note in _catalog_with_availability(settings):
        if model.kind == "chat":
            prices = {"input_per_1m": format_usd(model.input_nano * 1_000_000),
                      "output_per_1m": format_usd(model.output_nano * 1_000_000),
                      "input_nano_per_token": model.input_nano,
                      "output_nano_per_token": model.output_nano}
        elif model.kind == "image":
            prices = {"per_image": format_usd(model.image_nano),
                      "nano_per_image": model.image_nano}
        else:
            prices = {"per_1m_characters": format_usd(model.input_nano * 1_000_000),
                      "nano_per_character": model.input_nano}
        records.append({"id": model.id, "kind": model.kind, "provider": model.provider,
                        "price": prices, "available": bool(available), "note": note})
    return records
