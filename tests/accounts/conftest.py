"""Fixtures for the shared-state tests: the real Redis under a key prefix of the test's own
(tests/redis_fixtures.py), a fake upstream, and settings for servers using both."""

from __future__ import annotations

import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.redis_fixtures import REDIS_URL, TEST_REDIS_TIMEOUT, redis_prefix  # noqa: F401


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI(api_key="sk-upstream") as fake:
        yield fake


@pytest.fixture
def shared_settings(make_settings, upstream, redis_prefix):  # noqa: F811
    """Settings for a server of the test's fleet: shared Redis, the fake upstream."""

    def make(redis_url: str | None = REDIS_URL, **overrides):
        chat = {"providers": {"openai": {"base_url": upstream.base_url,
                                         "api_key": "sk-upstream", "read_timeout": 5}},
                "builtin_local_model": False}
        if redis_url:
            overrides = {"redis_url": redis_url, "redis_key_prefix": redis_prefix,
                         "redis_timeout_seconds": TEST_REDIS_TIMEOUT, **overrides}
        return make_settings(chat=chat, **overrides)
    return make
