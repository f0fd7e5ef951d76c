"""The speech models in the catalog, and whether this configuration can serve them."""

from __future__ import annotations

import ctypes.util

from minitoolai.catalog import Model
from minitoolai.config import OPENAI_DEFAULT_BASE_URL
from minitoolai.money import per_unit_nano
from minitoolai.speech.formats import FORMATS, local_engine_missing

ESPEAK = "espeak"
PIPER = "piper"


def speech_models(settings) -> list[Model]:
    cfg = settings.speech
    public = {"formats": list(FORMATS), "voices_url": "/api/voices/"}
    models = []
    if cfg.espeak:
        models.append(Model(
            id=cfg.espeak_model_id, kind="speech", provider=ESPEAK, upstream_model="espeak-ng",
            input_nano=per_unit_nano(cfg.espeak_price), owned_by="local",
            extra={"public": public}))
    if cfg.piper_voices:
        models.append(Model(
            id=cfg.piper_model_id, kind="speech", provider=PIPER, upstream_model="piper",
            input_nano=per_unit_nano(cfg.piper_price), owned_by="local",
            extra={"public": public}))
    for m in cfg.upstream_models:
        models.append(Model(
            id=m.id, kind="speech", provider=m.provider, upstream_model=m.upstream_model or m.id,
            input_nano=per_unit_nano(m.price), owned_by="openai", enabled=m.enabled,
            extra={"public": public, "voices": tuple(m.voices),
                   "instructions": m.instructions}))
    return models


def is_local(model: Model) -> bool:
    return model.provider in (ESPEAK, PIPER)


def espeak_found(settings) -> tuple[bool, str]:
    missing = local_engine_missing()
    if missing is not None:
        return False, missing
    if settings.speech.espeak_library is not None:
        path = settings.speech.espeak_library
        return path.is_file(), f"eSpeak NG from {path}" if path.is_file() else f"{path} missing"
    try:
        import espeakng_loader  # noqa: F401
    except ImportError:
        if ctypes.util.find_library("espeak-ng"):
            return True, "eSpeak NG from the system library"
        return False, "eSpeak NG not installed: pip install 'minitoolai[speech]'"
    return True, "eSpeak NG from espeakng-loader"


def upstream_configured(settings, model: Model) -> tuple[bool, str]:
    provider = settings.chat.providers.get(model.provider)
    if provider is None or not provider.base_url:
        return False, f"provider {model.provider!r} is not configured"
    if not provider.api_key and provider.base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL:
        return False, "no OpenAI API key (set OPENAI_API_KEY or chat.providers.openai.api_key)"
    return True, f"upstream {provider.base_url}"
