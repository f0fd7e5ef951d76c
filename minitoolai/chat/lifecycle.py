"""Start and stop of chat: builds the providers and the chat service."""

from __future__ import annotations

import logging

from minitoolai.catalog import Model
from minitoolai.chat.local_models import local_model_settings, problem
from minitoolai.chat.providers.openai_compatible import OpenAICompatibleProvider
from minitoolai.chat.service import ChatService
from minitoolai.money import per_unit_nano

log = logging.getLogger(__name__)


def default_model_id(settings) -> str | None:
    """The model the quick start's curl command uses: the built-in local one when it can run,
    else the seed's gpt-4o-mini when its upstream is configured; None when neither is."""
    for cfg in local_model_settings(settings):
        if problem(cfg) is None:
            return cfg.id
    if settings.chat.providers.get("openai") is not None and \
            OpenAICompatibleProvider("openai", settings.chat.providers["openai"]).configured:
        return "gpt-4o-mini"
    return None


def extend_catalog(settings, catalog) -> None:
    """Add the local GGUF models (configured and built-in) to the catalog."""
    for cfg in local_model_settings(settings):
        catalog.add(Model(id=cfg.id, kind="chat", provider=f"local:{cfg.id}",
                          upstream_model=cfg.id, input_nano=per_unit_nano(cfg.input_price),
                          output_nano=per_unit_nano(cfg.output_price),
                          max_output_tokens=cfg.context_size, owned_by="local"))


def availability(settings, model) -> tuple[bool, str]:
    if model.provider.startswith("local:"):
        for cfg in local_model_settings(settings):
            if f"local:{cfg.id}" == model.provider:
                why_not = problem(cfg)
                return (False, why_not) if why_not else (True, f"local GGUF {cfg.path.name}")
        return False, "local model not configured"
    cfg = settings.chat.providers.get(model.provider)
    if cfg is None:
        return False, f"provider {model.provider!r} is not configured"
    provider = OpenAICompatibleProvider(model.provider, cfg)
    if provider.configured:
        return True, f"via {cfg.base_url}"
    return False, f"set OPENAI_API_KEY (or the {model.provider} provider's api_key)"


async def _local_providers(settings) -> dict:
    configs = []
    for cfg in local_model_settings(settings):
        why_not = problem(cfg)
        if why_not:
            log.warning("%s", why_not)
        else:
            configs.append(cfg)
    if not configs:
        return {}
    try:
        from minitoolai.chat.providers.local_gguf import LocalGGUFProvider
    except ImportError as exc:
        log.warning("local models configured but llama-cpp-python is not installed: %s", exc)
        return {}
    providers = {}
    for cfg in configs:
        provider = LocalGGUFProvider(cfg)
        if settings.chat.preload_local_models:
            try:
                await provider.start()
            except Exception as exc:  # a broken model file must not stop the whole server
                log.error("cannot load local model %s from %s: %s", cfg.id, cfg.path, exc)
                continue
        providers[provider.name] = provider
    return providers


async def start(runtime) -> None:
    settings = runtime.settings
    extend_catalog(settings, runtime.catalog)
    providers: dict = {}
    for name, cfg in settings.chat.providers.items():
        provider = OpenAICompatibleProvider(name, cfg)
        await provider.start()
        providers[name] = provider
    providers.update(await _local_providers(settings))
    runtime.chat = ChatService(runtime, providers)


async def stop(runtime) -> None:
    service: ChatService | None = runtime.chat
    if service is None:
        return
    await runtime.holds.drain()
    await runtime.holds.undoer.stop()  # releases not made yet are left to the sweeper
    for provider in service.providers.values():
        await provider.aclose()
