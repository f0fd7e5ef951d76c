"""Image backends: diffusers (in-process), a1111 (AUTOMATIC1111/Forge upstream), and
instant (tests and benchmarks only). `build_backends` maps each configured model to one."""

from __future__ import annotations

import importlib.util

from minitoolai.images.backends.base import Backend

INSTALL_IMAGES = "pip install 'minitoolai[images]'"


def missing_modules(*names: str) -> list[str]:
    """Which of these optional modules cannot be imported here (found without importing them:
    torch alone takes seconds to import)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def model_ready(settings, model: str, *, detailed: bool = False) -> tuple[bool, str]:
    """Whether the configuration makes `model` servable here, and a note saying why (not):
    short for `minitoolai models`, detailed (how to install it) for API errors."""
    images = settings.images
    cfg = images.models.get(model)
    how = (f"set images.models.{model} in the config file, e.g. MINITOOLAI_IMAGES__MODELS="
           f"'{{\"{model}\": {{\"backend\": \"diffusers\", \"path\": \"/models/{model}"
           f".safetensors\"}}}}' (a local SD1.5/SDXL checkpoint), or backend \"a1111\" with"
           " images.a1111.base_url; see docs/images.md") if detailed else (
           f"set images.models.{model} (docs/images.md)")
    if cfg is None or not cfg.enabled:
        if not detailed:
            return False, f"not installed: {how}"
        return False, f"image model {model!r} is not installed on this server: {how}"
    if cfg.backend == "diffusers":
        missing = missing_modules("torch", "diffusers", "transformers")
        if missing:
            return False, (f"image model {model!r} uses the diffusers backend, which needs"
                           f" {', '.join(missing)}: {INSTALL_IMAGES}")
        if cfg.path is None:
            return False, f"image model {model!r} has no checkpoint path: {how}"
        if not cfg.path.exists():
            return False, f"image model {model!r}: checkpoint {cfg.path} does not exist"
        return True, f"diffusers: {cfg.path}"
    if cfg.backend == "a1111":
        if not images.a1111.base_url:
            return False, (f"image model {model!r} uses the a1111 backend but"
                           " images.a1111.base_url is not set")
        return True, f"a1111: {images.a1111.base_url}"
    return True, "instant: test/benchmark backend, plain images"


def build_backends(settings) -> dict[str, Backend]:
    """One backend object per kind, shared by the models that use it."""
    shared: dict[str, Backend] = {}
    out: dict[str, Backend] = {}
    for model, cfg in settings.images.models.items():
        if not model_ready(settings, model)[0]:
            continue
        if cfg.backend not in shared:
            if cfg.backend == "diffusers":
                from minitoolai.images.backends.diffusers_backend import DiffusersBackend

                shared[cfg.backend] = DiffusersBackend(settings)
            elif cfg.backend == "a1111":
                from minitoolai.images.backends.a1111 import A1111Backend

                shared[cfg.backend] = A1111Backend(settings.images)
            else:
                from minitoolai.images.backends.instant import InstantBackend

                shared[cfg.backend] = InstantBackend()
        out[model] = shared[cfg.backend]
    return out
