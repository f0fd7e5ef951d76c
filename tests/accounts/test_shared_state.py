"""What several `serve` processes share through Redis: the per-key rate limit, key revocation
and account disabling pushed at once, and what happens when Redis goes away and comes back.

Three apps, each with its own Runtime, on one database and the real Redis (under a key
prefix of the test's own); the fault test puts its own TCP proxy between them and Redis.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

import requests

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens
from tests.redis_fixtures import REDIS_URL, redis_url_of, wait_subscribers
from tests.fakes.tcp_proxy import TcpProxy
from tests.servers import ThreadedServer

URL = "/api/chat-completions/"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}
# gpt-4o-mini: 150 and 600 nanodollars per input and output token; the fake answers 5 chunks
COST = count_prompt_tokens(BODY["messages"]) * 150 + 5 * 600
CREDIT = 10**9
LIMITS = {"rate_limit_burst": "10", "rate_limit_per_minute": "1"}  # no refill during a test


@contextmanager
def fleet(settings_list):
    with ExitStack() as stack:
        yield [stack.enter_context(ThreadedServer(create_app(s))) for s in settings_list]


def post(server, customer):
    return requests.post(server.url + URL, headers=customer.headers, json=BODY, timeout=30)


def burst(servers, customer, count):
    """`count` concurrent requests, spread evenly over the servers."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: post(servers[i % len(servers)], customer),
                             range(count)))


def assert_limited(response):
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    assert int(response.headers["Retry-After"]) >= 1


def served(responses) -> int:
    for r in responses:
        if r.status_code != 200:
            assert_limited(r)
    return sum(r.status_code == 200 for r in responses)


def assert_charged(database_url, expected: dict[int, int]) -> None:
    """Each account charged exactly COST per served request, and nothing else."""
    async def read():
        db = Database(database_url, pool_size=1)
        try:
            async with db.read() as conn:
                rows = (await conn.exec_driver_sql(
                    "SELECT a.id, a.balance, a.held, (SELECT count(*) FROM ledger_entries e"
                    " WHERE e.account_id = a.id AND e.kind = 'charge') FROM accounts a")).all()
        finally:
            await db.dispose()
        return {r[0]: tuple(r[1:]) for r in rows}
    deadline = time.monotonic() + 10
    while True:  # settlement may trail the response by a moment
        got = run(read())
        want = {a: (CREDIT - n * COST, 0, n) for a, n in expected.items()}
        if {a: got[a] for a in expected} == want or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert {a: got[a] for a in expected} == want
    run(assert_ledger_ok(database_url))


def cli(database_url, tmp_path, prefix, redis_url, *args):
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
           "MINITOOLAI_DATA_DIR": str(tmp_path / "cli-data"), "MINITOOLAI_REDIS_URL": redis_url,
           "MINITOOLAI_REDIS_KEY_PREFIX": prefix, "OPENAI_API_KEY": "", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                            check=False,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused_everywhere(servers, customer, status, code, within=2.0) -> int:
    """Every server refuses the key with `status`/`code` within `within` seconds (far less
    than the cache's 60 s); returns how many requests were served meanwhile."""
    start = time.monotonic()
    pending = list(servers)
    ok = 0
    while pending:
        response = post(pending[0], customer)
        if response.status_code == status:
            assert response.json()["error"]["code"] == code
            pending.pop(0)
            continue
        assert response.status_code in (200, 429), response.text
        ok += response.status_code == 200
        assert time.monotonic() - start < within, "a server still accepts the key"
        time.sleep(0.01)
    return ok


def test_a_burst_over_three_servers_gets_the_burst_limit_once(shared_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    other = run(make_customer(database_url, CREDIT))
    with fleet([shared_settings(**LIMITS) for _ in range(3)]) as servers:
        assert served(burst(servers, customer, 30)) == 10
        assert served(burst(servers, other, 12)) == 10  # the limit is per key
    assert_charged(database_url, {customer.account_id: 10, other.account_id: 10})


def test_without_redis_each_process_counts_alone(shared_settings, database_url):
    customer = run(make_customer(database_url, CREDIT))
    with fleet([shared_settings(redis_url=None, **LIMITS) for _ in range(3)]) as servers:
        assert served(burst(servers, customer, 36)) == 30
    assert_charged(database_url, {customer.account_id: 30})


def test_revocation_from_the_cli_reaches_every_server_at_once(shared_settings, database_url,
                                                              redis_prefix, tmp_path):
    customer = run(make_customer(database_url, CREDIT))
    other = run(make_customer(database_url, CREDIT))
    # a minute of trust in the cache: only the push can explain a refusal within seconds
    settings = [shared_settings(auth_cache_seconds="60") for _ in range(3)]
    with fleet(settings) as servers:
        wait_subscribers(redis_prefix, 3)
        for server in servers:  # every server has both keys in its cache
            assert post(server, customer).status_code == 200
            assert post(server, other).status_code == 200
        out = cli(database_url, tmp_path, redis_prefix, REDIS_URL,
                  "keys", "revoke", customer.key_id)
        assert f"revoked {customer.key_id}" in out and "within" not in out
        late = refused_everywhere(servers, customer, 401, "revoked_api_key")
        cli(database_url, tmp_path, redis_prefix, REDIS_URL, "accounts", "disable", other.email)
        late_other = refused_everywhere(servers, other, 403, "account_disabled")
    assert_charged(database_url, {customer.account_id: 3 + late,
                                  other.account_id: 3 + late_other})


def test_losing_redis_degrades_to_per_process_limits_and_recovers(
        shared_settings, database_url, redis_prefix, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="minitoolai.redis_link")
    proxy = TcpProxy("127.0.0.1", int(REDIS_URL.rsplit(":", 1)[1].split("/")[0])).start()
    before, during, after, load = (run(make_customer(database_url, CREDIT)) for _ in range(4))
    settings = [shared_settings(redis_url=redis_url_of(proxy), redis_retry_seconds="1",
                                auth_cache_seconds="60", **LIMITS) for _ in range(3)]
    statuses: list[int] = []
    stop = threading.Event()

    def keep_loading(servers):  # the load that runs through the cut and the return
        i = 0
        while not stop.is_set():
            statuses.append(post(servers[i % 3], load).status_code)
            i += 1

    def messages(word):
        return [r for r in caplog.records if r.name == "minitoolai.redis_link"
                and word in r.getMessage()]

    try:
        with fleet(settings) as servers:
            wait_subscribers(redis_prefix, 3)
            loader = threading.Thread(target=keep_loading, args=(servers,))
            loader.start()
            assert served(burst(servers, before, 30)) == 10  # shared

            proxy.cut()
            time.sleep(0.3)
            assert served(burst(servers, during, 45)) == 30  # 10 per process
            assert len(messages("unreachable")) == 3  # one per process, not one per request

            proxy.restore()
            wait_subscribers(redis_prefix, 3)  # the subscribers came back by themselves
            time.sleep(1.2)  # past redis_retry_seconds: the next call probes Redis
            statuses.extend(post(server, load).status_code for server in servers)
            assert served(burst(servers, after, 30)) == 10  # shared again
            assert len(messages("reachable again")) == 3
            assert len(messages("unreachable")) == 3

            # and revocations are pushed again
            cli(database_url, tmp_path, redis_prefix, redis_url_of(proxy),
                "keys", "revoke", after.key_id)
            assert refused_everywhere(servers, after, 401, "revoked_api_key") == 0
            stop.set()
            loader.join()
    finally:
        stop.set()
        proxy.stop()
    assert statuses and set(statuses) <= {200, 429}, sorted(set(statuses))
    # the shared burst before the cut, then at most each process's own
    assert 10 <= statuses.count(200) <= 40
    assert_charged(database_url, {before.account_id: 10, during.account_id: 30,
                                  after.account_id: 10, load.account_id: statuses.count(200)})
