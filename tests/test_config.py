import pytest

from minitoolai.config import load_settings
from minitoolai.errors import ConfigError


def test_env_over_file_over_defaults(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('port = 9001\nhost = "0.0.0.0"\n[chat]\ndefault_max_completion_tokens = 7\n')
    s = load_settings({"MINITOOLAI_CONFIG": str(path), "MINITOOLAI_PORT": "9002"})
    assert s.port == 9002 and s.host == "0.0.0.0"
    assert s.chat.default_max_completion_tokens == 7


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match="'colour'"):
        load_settings({"MINITOOLAI_COLOUR": "blue"})
    path = tmp_path / "c.toml"
    path.write_text("[chat]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="chat.bogus"):
        load_settings({"MINITOOLAI_CONFIG": str(path)})


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match="port"):
        load_settings({"MINITOOLAI_PORT": "eighty"})


def test_openai_provider_reads_standard_variables():
    s = load_settings({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert s.chat.providers["openai"].api_key == "sk-x"
    assert s.chat.providers["openai"].base_url == "http://127.0.0.1:9/v1"
