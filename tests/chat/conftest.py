"""Fixtures for chat: a fake OpenAI upstream and the server configured to use it."""

from __future__ import annotations

import pytest

from minitoolai.app import create_app
from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import ThreadedServer


@pytest.fixture(scope="session")
def upstream():
    with FakeOpenAI(api_key="sk-upstream") as fake:
        yield fake


@pytest.fixture
def chat_settings(make_settings, upstream):
    def make(**overrides):
        providers = {"openai": {"base_url": upstream.base_url, "api_key": "sk-upstream",
                                "read_timeout": 2}}
        chat = {"providers": providers, "builtin_local_model": False}
        chat.update(overrides.pop("chat", {}))
        return make_settings(chat=chat, **overrides)
    return make


@pytest.fixture
def server(chat_settings):
    with ThreadedServer(create_app(chat_settings())) as live:
        yield live
