"""Speech in the catalog: the default prices, configured ones, and availability as
`minitoolai models` reports it without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from minitoolai.catalog_status import catalog_rows
from minitoolai.config import load_settings
from minitoolai.errors import ConfigError


def _settings(**environ) -> object:
    return load_settings({"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", **environ})


def test_default_speech_models_and_prices():
    rows = {r[0]: r for r in catalog_rows(_settings())}
    assert rows["espeak-ng"][1:4] == ("speech", "$1.00 per 1M characters", "yes")
    assert rows["tts-1"][1:4] == ("speech", "$15.00 per 1M characters", "no")
    assert rows["tts-1-hd"][2] == "$30.00 per 1M characters"
    assert rows["gpt-4o-mini-tts"][2] == "$15.00 per 1M characters"
    assert "OPENAI_API_KEY" in rows["tts-1"][4]
    assert "piper" not in rows  # only when voices are configured


def test_upstream_available_with_a_key_and_prices_from_the_environment():
    settings = _settings(OPENAI_API_KEY="sk-test",
                         MINITOOLAI_SPEECH__ESPEAK_PRICE="0.25",
                         MINITOOLAI_SPEECH__UPSTREAM_MODELS='[{"id": "tts-1", "price": "12"}]')
    rows = {r[0]: r for r in catalog_rows(settings)}
    assert rows["tts-1"][2:4] == ("$12.00 per 1M characters", "yes")
    assert rows["espeak-ng"][2] == "$0.25 per 1M characters"
    assert "tts-1-hd" not in rows


@pytest.mark.parametrize("name, value, key", [
    ("MINITOOLAI_SPEECH__ESPEAK_PRICE", "0.0000001", "speech.espeak_price"),
    ("MINITOOLAI_SPEECH__DEFAULT_FORMAT", "ogg", "speech.default_format"),
    ("MINITOOLAI_SPEECH__NO_SUCH_KEY", "1", "speech.no_such_key"),
    ("MINITOOLAI_SPEECH__UPSTREAM_MODELS", '[{"id": "x", "price": "free"}]',
     "speech.upstream_models.0.price"),
])
def test_bad_speech_configuration_names_the_key(name, value, key):
    with pytest.raises(ConfigError) as info:
        _settings(**{name: value})
    assert key in str(info.value)


def test_without_pyav_the_local_engines_say_why(tmp_path):
    # a fresh interpreter where `import av` fails, as on an install without the speech extra
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['av'] = None\n"
        "from minitoolai.config import load_settings\n"
        "from minitoolai.catalog_status import catalog_rows\n"
        "rows = {r[0]: r for r in catalog_rows(load_settings({'OPENAI_API_KEY': 'sk-x'}))}\n"
        "print(rows['espeak-ng'][3], rows['espeak-ng'][4], rows['tts-1'][3], sep='|')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                              "PATH": "/usr/bin:/bin"})
    available, note, upstream = out.stdout.strip().split("|")
    assert (available, upstream) == ("no", "yes")
    assert "av is not installed" in note
