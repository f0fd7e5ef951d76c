"""Fixtures for the shared-state tests: the real Redis on 127.0.0.1:6379 under a key prefix
of this test's own (deleted after), a fake upstream, and settings for servers using both."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from tests.fakes.openai_upstream import FakeOpenAI

REDIS_URL = os.environ.get("MTAI_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_prefix():
    """A key prefix (and pub/sub channel prefix) no other run uses; its keys go after."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} not reachable: {exc}")
    prefix = f"mtai-test-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI(api_key="sk-upstream") as fake:
        yield fake


@pytest.fixture
def shared_settings(make_settings, upstream, redis_prefix):
    """Settings for a server of the test's fleet: shared Redis, the fake upstream."""

    def make(redis_url: str | None = REDIS_URL, **overrides):
        chat = {"providers": {"openai": {"base_url": upstream.base_url,
                                         "api_key": "sk-upstream", "read_timeout": 5}},
                "builtin_local_model": False}
        if redis_url:
            # three servers and dozens of client threads share one interpreter on a machine
            # that runs other suites too: a slow moment must not pass for a lost Redis (the
            # default 250 ms is for real deployments; the fault test cuts Redis for real)
            overrides = {"redis_url": redis_url, "redis_key_prefix": redis_prefix,
                         "redis_timeout_seconds": "2", **overrides}
        return make_settings(chat=chat, **overrides)
    return make
