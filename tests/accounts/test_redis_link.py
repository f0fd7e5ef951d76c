"""The rate limiter's way to Redis when Redis stalls (connections open, no answer): each call
ends within `redis_timeout_seconds`, the limiter goes on per process with one warning, calls
skip Redis while the breaker is open, and Redis is used again once it answers."""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from minitoolai.accounts.ratelimit import RateLimiter
from minitoolai.config import load_settings
from minitoolai.errors import RateLimited
from minitoolai.redis_link import RedisLink
from tests.redis_fixtures import REDIS_URL, redis_prefix, redis_url_of  # noqa: F401
from tests.fakes.tcp_proxy import TcpProxy

TIMEOUT = 0.5


async def take(limiter: RateLimiter, key: str) -> tuple[bool, float]:
    """(allowed, seconds the check took)"""
    start = time.monotonic()
    try:
        await limiter.check_shared(key)
        allowed = True
    except RateLimited as exc:
        assert int(exc.headers["Retry-After"]) >= 1
        allowed = False
    return allowed, time.monotonic() - start


async def test_a_stalled_redis_costs_one_timeout_then_nothing(redis_prefix, caplog):  # noqa: F811
    caplog.set_level(logging.INFO, logger="minitoolai.redis_link")
    proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])).start()
    settings = load_settings({}, overrides={
        "redis_url": redis_url_of(proxy), "redis_key_prefix": redis_prefix,
        "redis_timeout_seconds": TIMEOUT, "redis_retry_seconds": 1})
    link = RedisLink(settings)
    limiter = RateLimiter(1, 2, link)
    direct = aioredis.Redis.from_url(REDIS_URL)
    try:
        assert [(await take(limiter, "key_a"))[0] for _ in range(3)] == [True, True, False]
        assert await direct.exists(redis_prefix + "rate:key_a")

        proxy.stalled = True
        allowed, took = await take(limiter, "key_b")
        assert allowed and TIMEOUT * 0.9 <= took < TIMEOUT + 1.0  # one timeout, then local
        rest = [await take(limiter, "key_b") for _ in range(2)]
        assert [a for a, _ in rest] == [True, False]  # this process's own burst of 2
        assert all(t < 0.1 for _, t in rest)  # the breaker is open: Redis is not asked
        assert not await direct.exists(redis_prefix + "rate:key_b")
        lost = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(lost) == 1 and lost[0].levelno == logging.WARNING

        proxy.stalled = False
        await asyncio.sleep(1.1)  # past redis_retry_seconds
        assert (await take(limiter, "key_c"))[0]
        assert await direct.exists(redis_prefix + "rate:key_c")  # shared again
        assert [r.getMessage() for r in caplog.records if "again" in r.getMessage()] \
            == ["Redis is reachable again: limits and revocations are shared again"]
    finally:
        await link.close()
        await direct.aclose()
        proxy.stop()


async def test_zero_turns_the_limit_off_without_asking_redis(caplog):
    settings = load_settings({}, overrides={"redis_url": "redis://127.0.0.1:1/0"})
    link = RedisLink(settings)
    limiter = RateLimiter(0, 1, link)
    for _ in range(5):
        await limiter.check_shared("key_a")  # port 1 would fail: it is never called
    assert link.healthy and not caplog.records
    await link.close()


async def test_readiness_reports_redis_and_degrades_without_failing(redis_prefix,  # noqa: F811
                                                                    make_settings):
    """`/health/ready` checks Redis when configured: lost, it says so and stays 200
    ("degraded": billing goes on) unless `redis_required_for_ready`; back, "ready" again."""
    import httpx

    from minitoolai.app import create_app
    from tests.servers import ThreadedServer

    proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])).start()
    try:
        for required in (False, True):
            settings = make_settings(redis_url=redis_url_of(proxy), redis_key_prefix=redis_prefix,
                                     redis_timeout_seconds=TIMEOUT, redis_retry_seconds=0.2,
                                     redis_required_for_ready=required)
            with ThreadedServer(create_app(settings)) as server:
                answer = httpx.get(server.url + "/health/ready", timeout=10)
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"status": "ready", "checks": {
                    "database": "ok", "migrations": "ok", "redis": "ok"}}
                proxy.cut()
                try:
                    answer = httpx.get(server.url + "/health/ready", timeout=10)
                    body = answer.json()
                    assert body["checks"]["redis"].startswith("unreachable: rate limits")
                    assert body["checks"]["database"] == "ok"
                    if required:
                        assert answer.status_code == 503 and body["status"] == "unavailable"
                    else:
                        assert answer.status_code == 200 and body["status"] == "degraded"
                finally:
                    proxy.restore()
                deadline = time.monotonic() + 10
                while (answer := httpx.get(server.url + "/health/ready", timeout=10)
                       ).json()["status"] != "ready":
                    assert time.monotonic() < deadline, answer.text
                    await asyncio.sleep(0.1)
                assert answer.status_code == 200
    finally:
        proxy.stop()
