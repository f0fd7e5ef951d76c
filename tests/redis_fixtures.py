"""The real Redis on 127.0.0.1:6379 (MTAI_TEST_REDIS) for tests, under a key prefix of the
test's own, deleted after. Import the fixture into a conftest to use it."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis

from minitoolai.accounts.revocation import CHANNEL

REDIS_URL = os.environ.get("MTAI_TEST_REDIS", "redis://127.0.0.1:6379/0")
# a slow moment of a busy test machine (servers and clients share one interpreter) must not
# pass for a lost Redis; the default 250 ms is for deployments, the fault test cuts for real
TEST_REDIS_TIMEOUT = "2"


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


def wait_subscribers(prefix: str, count: int, timeout: float = 10.0) -> None:
    """Until `count` servers listen for revocations under this prefix."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        deadline = time.monotonic() + timeout
        while dict(client.pubsub_numsub(prefix + CHANNEL))[(prefix + CHANNEL).encode()] \
                != count:
            assert time.monotonic() < deadline, "the servers did not subscribe"
            time.sleep(0.02)
    finally:
        client.close()


def redis_url_of(proxy) -> str:
    """The Redis URL that goes through a tests.fakes.tcp_proxy.TcpProxy."""
    return f"redis://127.0.0.1:{proxy.port}/0"
