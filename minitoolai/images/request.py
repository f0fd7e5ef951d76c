"""Validation of a text-to-image request, field by field, as the seed documents it.

Everything here runs before any credit is held, so a refused request costs nothing.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from minitoolai.errors import InvalidRequest

SCHEDULERS: tuple[str, ...] = (
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
    "DPM++ 2M SDE", "DPM fast", "LMS Karras", "DPM2 Karras", "DPM2 a Karras",
    "DPM++ 2S a Karras", "DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE Karras",
)
DEFAULT_SCHEDULER = "DPM++ SDE"
DEFAULT_STEPS = 4
DEFAULT_CFG = 2.0
DEFAULT_SIZE = 1024
MIN_SIZE, MAX_SIZE = 256, 1344
MAX_PROMPT_CHARS = 10_000
MAX_SEED = 2**32 - 1
SEED_FIELDS = ("model", "prompt", "negativePrompt", "scheduler", "steps", "cfgScale", "width",
               "height", "seed")


@dataclass(frozen=True, slots=True)
class ImageRequest:
    model: str
    prompt: str
    negative_prompt: str
    scheduler: str
    steps: int
    cfg_scale: float
    width: int
    height: int
    seed: int


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _integer(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise InvalidRequest(f"{name} must be an integer between {low} and {high}, got"
                             f" {value!r}", param=name)
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}, got {value}", param=name)
    return value


def _size(body: dict, name: str) -> int:
    value = _integer(body, name, DEFAULT_SIZE, MIN_SIZE, MAX_SIZE)
    if value % 8:
        raise InvalidRequest(f"{name} must be a multiple of 8, got {value}", param=name)
    return value


def _text(body: dict, name: str, *, required: bool) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required", param=name, code="missing_field")
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string", param=name)
    if required and not value.strip():
        raise InvalidRequest(f"{name} must not be empty", param=name)
    if len(value) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"{name} is longer than {MAX_PROMPT_CHARS} characters", param=name)
    return value


def parse_image_request(body: Any, model_names: tuple[str, ...] | list[str]) -> ImageRequest:
    """The seed's request body, checked field by field (400 naming the field on error)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = sorted(set(body) - set(SEED_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; the fields are "
                             + ", ".join(SEED_FIELDS), param=unknown[0], code="unknown_field")
    model = body.get("model")
    if model is None:
        raise InvalidRequest("model is required", param="model", code="missing_field")
    if not isinstance(model, str) or model not in model_names:
        raise InvalidRequest(f"model must be one of {', '.join(model_names)}, got {model!r}",
                             param="model", code="model_not_found")
    prompt = _text(body, "prompt", required=True)
    negative = _text(body, "negativePrompt", required=False)
    scheduler = body.get("scheduler")
    if scheduler is None:
        scheduler = DEFAULT_SCHEDULER
    elif scheduler not in SCHEDULERS:
        raise InvalidRequest(f"scheduler must be one of {', '.join(SCHEDULERS)}, got"
                             f" {scheduler!r}", param="scheduler")
    steps = _integer(body, "steps", DEFAULT_STEPS, 1, 8)
    cfg = body.get("cfgScale")
    if cfg is None:
        cfg = DEFAULT_CFG
    elif isinstance(cfg, bool) or not isinstance(cfg, int | float):
        raise InvalidRequest(f"cfgScale must be a number between 1 and 7, got {cfg!r}",
                             param="cfgScale")
    elif not 1 <= cfg <= 7:
        raise InvalidRequest(f"cfgScale must be between 1 and 7, got {cfg}", param="cfgScale")
    width = _size(body, "width")
    height = _size(body, "height")
    seed_value = body.get("seed")
    seed = (secrets.randbelow(MAX_SEED + 1) if seed_value is None
            else _integer(body, "seed", 0, 0, MAX_SEED))
    return ImageRequest(model=model, prompt=prompt, negative_prompt=negative,
                        scheduler=scheduler, steps=steps, cfg_scale=float(cfg), width=width,
                        height=height, seed=seed)
