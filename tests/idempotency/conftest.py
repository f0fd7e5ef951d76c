"""The chat fixtures (a fake OpenAI upstream and settings that use it), shared."""

from tests.chat.conftest import chat_settings, upstream  # noqa: F401
