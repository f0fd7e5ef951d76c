"""Start and stop of speech: builds its service and attaches it to the runtime."""

from __future__ import annotations

from minitoolai.speech import models as speech_models


def extend_catalog(settings, catalog) -> None:
    """Add the speech models (local engines and upstream ones) with their prices."""
    for model in speech_models.speech_models(settings):
        catalog.add(model)


def availability(settings, model) -> tuple[bool, str]:
    """Whether this server can serve the model, from configuration alone, and why not."""
    if model.provider == speech_models.ESPEAK:
        return speech_models.espeak_found(settings)
    if model.provider == speech_models.PIPER:
        from minitoolai.speech.engines.piper import piper_installed

        missing = speech_models.local_engine_missing()
        if missing is not None:
            return False, missing
        if not piper_installed():
            return False, "piper-tts not installed: pip install 'minitoolai[speech]'"
        missing = [str(v.model) for v in settings.speech.piper_voices if not v.model.is_file()]
        if missing:
            return False, "missing voice files: " + ", ".join(missing)
        return True, f"{len(settings.speech.piper_voices)} Piper voice(s)"
    return speech_models.upstream_configured(settings, model)


async def start(runtime) -> None:
    """Build the speech service; set runtime.speech."""
    from minitoolai.speech.service import SpeechService

    extend_catalog(runtime.settings, runtime.catalog)
    service = SpeechService(runtime)
    await service.open()
    runtime.speech = service


async def stop(runtime) -> None:
    """Release what start() opened."""
    if runtime.speech is not None:
        await runtime.speech.close()
