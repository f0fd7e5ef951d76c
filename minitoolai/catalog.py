"""The catalog: which models exist, what they cost, what they accept, and where they route.

The default catalog is the seeds' price tables (seed 001 stands where the two disagree).
Configuration adds models or overrides any field of a default one. Prices are held as
integer nanodollars per token / per image / per character, computed once at start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

from minitoolai.money import parse_usd, per_unit_nano

Kind = Literal["chat", "image", "speech"]
Reasoning = Literal["gpt-5", "gpt-5.1"]

# seed 001, "Prix par 1M de tokens": id -> (input USD, output USD)
SEED_CHAT_PRICES: dict[str, tuple[str, str]] = {
    "gpt-4o-mini": ("0.15", "0.60"),
    "gpt-4o": ("2.50", "10.00"),
    "gpt-4.1": ("2.00", "8.00"),
    "gpt-4.1-mini": ("0.40", "1.60"),
    "gpt-4.1-nano": ("0.10", "0.40"),
    "gpt-5": ("1.25", "10.00"),
    "gpt-5-mini": ("0.25", "2.00"),
    "gpt-5-nano": ("0.05", "0.40"),
    "gpt-5.1": ("1.25", "10.00"),
    "gpt-5.2": ("1.75", "14.00"),
    "gpt-5.4": ("2.50", "15.00"),
    "gpt-5.4-mini": ("0.75", "4.50"),
    "gpt-5.4-nano": ("0.20", "1.25"),
    "gpt-5.5": ("5.00", "30.00"),
    "gpt-5.3-codex": ("1.75", "14.00"),
    "gpt-5.1-codex-mini": ("0.25", "2.00"),
}

# The seed's reasoning_effort families: GPT-5 takes minimal..high (default minimal),
# GPT-5.1 and later take none..high (default none). Everything else refuses the field.
REASONING_EFFORTS: dict[str, tuple[tuple[str, ...], str]] = {
    "gpt-5": (("minimal", "low", "medium", "high"), "minimal"),
    "gpt-5.1": (("none", "low", "medium", "high"), "none"),
}

SEED_IMAGE_MODELS: tuple[str, ...] = (
    "realvision", "juggernaut", "autismmix", "dreamshaper", "valhalla", "mixrealistic",
    "campursari", "reality", "extrarealistic", "realism", "realgirls", "realityreborn",
    "amigo", "simplemix", "beautifulrealistic",
)
SEED_IMAGE_PRICE_USD = "0.0015"


@dataclass(frozen=True, slots=True)
class Model:
    """One catalog entry. Prices are nanodollars per unit (token, image or character)."""

    id: str
    kind: Kind
    provider: str
    upstream_model: str
    input_nano: int = 0  # per input token (chat) or per character (speech)
    output_nano: int = 0  # per output token (chat)
    image_nano: int = 0  # per image (image)
    vision: bool = False
    # upper bound of the input tokens one image part can cost (for the hold): gpt-4o-mini
    # bills an image as up to 2833 + 8 x 5667 tokens; the others stay under 4000
    image_tokens_max: int = 0
    # upper bound of the input tokens one `file` part (a PDF: text plus an image per page)
    # can cost; 0 = file parts are refused for this model
    file_tokens_max: int = 0
    # the most output tokens one choice can have: the hold's bound when a /v1 request sets
    # no max-tokens field (nothing is forwarded then, as with OpenAI itself)
    max_output_tokens: int = 16_384
    reasoning: Reasoning | None = None
    # GPT-5-family upstreams reject a non-default temperature while reasoning:
    # "always" forwards it, "never" drops it, "no_reasoning" forwards it only with effort none.
    temperature_policy: Literal["always", "never", "no_reasoning"] = "always"
    # the upstream API the model is served through: "responses" for models OpenAI serves on
    # its Responses API only (the codex ones); chat completions are translated to it
    # (chat/responses_bridge.py)
    api: Literal["chat", "responses"] = "chat"
    fallback_providers: tuple[str, ...] = ()
    enabled: bool = True
    owned_by: str = "minitoolai"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def forwards_temperature(self, reasoning_effort: str | None) -> bool:
        if self.temperature_policy == "always":
            return True
        if self.temperature_policy == "no_reasoning":
            return reasoning_effort in (None, "none")
        return False

    def chat_cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        return prompt_tokens * self.input_nano + completion_tokens * self.output_nano


# OpenAI accepts PDFs of up to 100 pages in a `file` part; each page is billed as its text
# plus an image of it
FILE_PAGES_MAX = 100
FILE_TEXT_TOKENS_PER_PAGE = 4_000


def seed_max_output_tokens(model_id: str) -> int:
    """OpenAI's documented output limits of the seed's model families."""
    if model_id.startswith("gpt-5"):
        return 128_000
    if model_id.startswith("gpt-4.1"):
        return 32_768
    return 16_384  # gpt-4o, gpt-4o-mini


def _seed_chat_model(model_id: str, prices: tuple[str, str]) -> Model:
    if model_id.startswith("gpt-5.") and not model_id.startswith("gpt-5-"):
        reasoning: Reasoning | None = "gpt-5.1"
    elif model_id.startswith("gpt-5"):
        reasoning = "gpt-5"
    else:
        reasoning = None
    if reasoning is None:
        policy = "always"
    elif reasoning == "gpt-5.1" and "codex" not in model_id:
        policy = "no_reasoning"
    else:
        policy = "never"
    image_tokens_max = 48_200 if model_id == "gpt-4o-mini" else 4_000
    return Model(
        id=model_id,
        kind="chat",
        provider="openai",
        upstream_model=model_id,
        input_nano=per_unit_nano(prices[0]),
        output_nano=per_unit_nano(prices[1]),
        vision=True,
        image_tokens_max=image_tokens_max,
        file_tokens_max=FILE_PAGES_MAX * (image_tokens_max + FILE_TEXT_TOKENS_PER_PAGE),
        max_output_tokens=seed_max_output_tokens(model_id),
        reasoning=reasoning,
        temperature_policy=policy,
        api="responses" if "codex" in model_id else "chat",
        owned_by="openai",
    )


def default_chat_models() -> dict[str, Model]:
    return {mid: _seed_chat_model(mid, p) for mid, p in SEED_CHAT_PRICES.items()}


class Catalog:
    """Every model the server knows, by id. Built once at start; read-only afterwards."""

    def __init__(self, models: dict[str, Model] | None = None) -> None:
        self._models: dict[str, Model] = dict(models or {})
        # `created` of /v1/models: when this server's catalog was built (the models have no
        # creation date of their own here), the same in every answer of this process
        self.created = int(time.time())

    def add(self, model: Model) -> None:
        self._models[model.id] = model

    def get(self, model_id: str) -> Model | None:
        model = self._models.get(model_id)
        return model if model is not None and model.enabled else None

    def of_kind(self, kind: Kind) -> list[Model]:
        return [m for m in self._models.values() if m.kind == kind and m.enabled]

    def __iter__(self):
        return (m for m in self._models.values() if m.enabled)

    def __contains__(self, model_id: str) -> bool:
        return self.get(model_id) is not None


def build_catalog(settings) -> Catalog:
    """The default catalog (seed chat models + seed image models), then configuration on top.

    Capabilities add their own entries in their `extend_catalog` (local GGUF models, speech
    voices, installed image checkpoints).
    """
    catalog = Catalog(default_chat_models())
    for cfg in settings.chat.models:
        base = catalog._models.get(cfg.id)
        fields = cfg.model_fields_set
        model = Model(
            id=cfg.id,
            kind="chat",
            provider=cfg.provider,
            upstream_model=cfg.upstream_model or (base.upstream_model if base else cfg.id),
            input_nano=per_unit_nano(cfg.input_price)
            if "input_price" in fields or base is None else base.input_nano,
            output_nano=per_unit_nano(cfg.output_price)
            if "output_price" in fields or base is None else base.output_nano,
            vision=cfg.vision if "vision" in fields or base is None else base.vision,
            image_tokens_max=cfg.image_tokens_max if "image_tokens_max" in fields or base is None
            else base.image_tokens_max,
            file_tokens_max=cfg.file_tokens_max if "file_tokens_max" in fields or base is None
            else base.file_tokens_max,
            max_output_tokens=cfg.max_output_tokens
            if "max_output_tokens" in fields or base is None else base.max_output_tokens,
            reasoning=cfg.reasoning if "reasoning" in fields or base is None else base.reasoning,
            temperature_policy=("always" if cfg.upstream_temperature else "never")
            if "upstream_temperature" in fields or base is None else base.temperature_policy,
            api=cfg.api if "api" in fields or base is None else base.api,
            fallback_providers=tuple(cfg.fallback_providers),
            enabled=cfg.enabled,
            owned_by=base.owned_by if base else cfg.provider,
        )
        catalog.add(model)
    image_nano = parse_usd(SEED_IMAGE_PRICE_USD)
    for name in SEED_IMAGE_MODELS:
        catalog.add(
            Model(id=name, kind="image", provider="images", upstream_model=name,
                  image_nano=image_nano)
        )
    return catalog
