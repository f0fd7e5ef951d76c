"""The conformance tests drive the same live servers and fakes as the capability tests."""

from tests.chat.conftest import chat_settings, server, upstream  # noqa: F401
from tests.images.conftest import image_settings, serve  # noqa: F401
from tests.speech.conftest import speech_settings, speech_upstream  # noqa: F401
