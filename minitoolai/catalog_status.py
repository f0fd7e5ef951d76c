"""The catalog's availability: what `minitoolai models` prints (computed from the
configuration and the installed packages alone, no server needs to run), and what a running
server can serve and why not (`/api/models/`, the dashboard, the 503 of an unavailable model)."""

from __future__ import annotations

from minitoolai.catalog import Model, build_catalog
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


def configured_availability(settings: Settings, model) -> tuple[bool, str]:
    """Whether the configuration and the installed packages let this model be served, and a
    note for the operator (with the install command when an extra is missing)."""
    return _AVAILABILITY[model.kind](settings, model)


def is_available(runtime, model: Model) -> bool:
    """Whether a request for this model can be served right now by this server."""
    service = {"chat": runtime.chat, "image": runtime.images, "speech": runtime.speech}[model.kind]
    if service is None:
        return False
    return service.is_available(model)


def unavailable_reason(runtime, model: Model) -> str | None:
    """Why this server cannot serve the model now, in words for whoever asked (None when it
    can): a missing extra names the pip command that installs it."""
    if is_available(runtime, model):
        return None
    configured, note = configured_availability(runtime.settings, model)
    if configured:  # installed and configured, yet not running: its start failed
        return f"{note}, but it did not start on this server (see the server's log)"
    return note


def price_text(model) -> str:
    if model.kind == "chat":
        return (f"${format_usd(model.input_nano * 1_000_000)} in / "
                f"${format_usd(model.output_nano * 1_000_000)} out per 1M tokens")
    if model.kind == "image":
        return f"${format_usd(model.image_nano)} per image"
    return f"${format_usd(model.input_nano * 1_000_000)} per 1M characters"


def configured_catalog(settings: Settings):
    """The catalog a server with these settings serves (capabilities' models included),
    without starting one: for the CLI."""
    catalog = build_catalog(settings)
    chat_lifecycle.extend_catalog(settings, catalog)
    images_lifecycle.extend_catalog(settings, catalog)
    speech_lifecycle.extend_catalog(settings, catalog)
    return catalog


def _catalog_with_availability(settings: Settings):
    for model in configured_catalog(settings):
        available, note = configured_availability(settings, model)
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
