"""Start and stop of chat: builds the providers and the chat service."""

from __future__ import annotations

from minitoolai.config import OPENAI_DEFAULT_BASE_URL


def default_model_id(settings) -> str:
    """The model the quick start's curl command uses."""
    return "gpt-4o-mini"


def extend_catalog(settings, catalog) -> None:
    """Add configured/built-in local models (called at start and by the CLI)."""


def availability(settings, model) -> tuple[bool, str]:
    provider = settings.chat.providers.get(model.provider)
    if model.provider.startswith("local:"):
        return True, "local GGUF model"
    if provider is None:
        return False, f"provider {model.provider!r} is not configured"
    if provider.api_key or (provider.base_url and provider.base_url != OPENAI_DEFAULT_BASE_URL):
        return True, f"via {provider.base_url}"
    return False, f"set OPENAI_API_KEY (or the {model.provider} provider's api_key)"


async def start(runtime) -> None:
    extend_catalog(runtime.settings, runtime.catalog)


async def stop(runtime) -> None:
    """Release what start() opened."""
