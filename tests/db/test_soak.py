"""The soak of bench/soak.py, short: three `serve` and two `worker` processes on one
PostgreSQL and Redis (each reached through a proxy of the test's own), under a load of chat
and image requests, while the database is cut and its backends terminated, Redis is cut and
a server is killed -9 and restarted. Nothing may answer 500, every 503 says when to retry,
every served request is charged exactly once and nothing else is, `ledger verify` passes,
every server serves again after each fault, and `/health/ready` never says ready while the
database is cut. (How fast it all recovers is measured in bench/soak.py, not asserted.)"""

from __future__ import annotations

import asyncio

import pytest
import redis

from tests.conftest import _pg_reachable
from tests.soak import (
    REDIS_HOST,
    REDIS_PORT,
    Platform,
    SoakOptions,
    account,
    figures_of,
    report,
    soak,
)


def _redis_reachable() -> str | None:
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis on {REDIS_HOST}:{REDIS_PORT} not reachable: {exc}"
    finally:
        client.close()
    return None


def test_three_servers_two_workers_survive_faults_and_charge_exactly(tmp_path, upstream):
    reason = _pg_reachable() or _redis_reachable()
    if reason:
        pytest.skip(reason)
    options = SoakOptions(db_drops=2, terminate_every=2, redis_drops=1, serve_kills=1,
                          worker_terms=0, worker_kills=0, down_seconds=2.0, calm_seconds=2.5,
                          warmup_seconds=1.5, chat_clients=4, image_clients=2,
                          hold_ttl_seconds=8)
    assert [kind for _, kind in options.faults()] == \
        ["db-cut", "redis-cut", "serve-kill", "db-terminate"]
    with Platform(tmp_path, upstream.base_url, "sk-upstream", options) as platform:
        load, faults = asyncio.run(soak(platform))
        figures = figures_of(load, faults)
        acc = account(platform, load)
    print(report(figures, acc, load))  # in the test's output when it fails

    for fig in figures:
        name = fig.fault.name
        assert (fig.status_500, fig.other_5xx) == (0, 0), (name, fig.examples)
        assert fig.without_retry_after == 0, name
        # every server served again after the fault (the killed one once restarted)
        assert all(seconds is not None for seconds in fig.recovery), (name, fig.recovery)
        # readiness: never "ready" while the database was cut, ready again after, and
        # no "not ready" once things were back
        assert fig.ready_lies == 0, name
        assert all(seconds is not None for seconds in fig.ready_back), (name, fig.ready_back)
        assert fig.ready_false_alarms == 0, name
        if fig.fault.kind == "db-cut":
            assert fig.ready_down > 0 and fig.status_503 > 0, name  # the cut was seen
        if fig.fault.kind == "serve-kill":
            assert fig.no_answer > 0, name
    assert acc.chat_served > 0 and acc.images_served > 0
    assert acc.exact, acc.details
    assert acc.charges == acc.chat_served + acc.images_served + acc.charged_unseen
    assert acc.verify_ok, acc.verify_output
