"""The dashboard on several servers sharing Redis: the login throttle counted once for the
whole platform, and a key revoked on one server's key page refused by the others at once."""

from __future__ import annotations

import time
from contextlib import ExitStack

import requests

from minitoolai.accounts.store import create_key
from minitoolai.app import create_app
from minitoolai.db.engine import Database
from tests.conftest import run
from tests.dashboard.conftest import PASSWORD, csrf_of, login, make_user, page_token
from tests.redis_fixtures import (  # noqa: F401
    REDIS_URL,
    TEST_REDIS_TIMEOUT,
    redis_prefix,
    wait_subscribers,
)
from tests.servers import ThreadedServer


def shared(prefix, **overrides):
    return {"redis_url": REDIS_URL, "redis_key_prefix": prefix,
            "redis_timeout_seconds": TEST_REDIS_TIMEOUT, **overrides}


def attempt(server, email, password):
    http = requests.Session()
    token = csrf_of(http.get(server.url + "/login").text)
    return http.post(server.url + "/login", data={"csrf_token": token, "email": email,
                                                  "password": password},
                     allow_redirects=False).status_code


def test_wrong_passwords_over_three_servers_count_once(dash_settings, database_url,
                                                       redis_prefix):  # noqa: F811
    _, email = run(make_user(database_url))
    _, other = run(make_user(database_url))
    settings = shared(redis_prefix, dashboard={"login_failures_per_15min": 4})
    with ExitStack() as stack:
        servers = [stack.enter_context(ThreadedServer(create_app(dash_settings(**settings))))
                   for _ in range(3)]
        statuses = [attempt(servers[i % 3], email, "wrong") for i in range(6)]
        assert statuses == [401] * 4 + [429] * 2
        # every server refuses even the right password now; another account is not affected
        assert [attempt(s, email, PASSWORD) for s in servers] == [429] * 3
        assert attempt(servers[0], other, PASSWORD) == 303


async def _new_key(database_url, account_id):
    db = Database(database_url, pool_size=1)
    try:
        return await create_key(db, account_id, "laptop")
    finally:
        await db.dispose()


def test_a_key_revoked_on_the_key_page_is_refused_by_every_server(
        dash_settings, database_url, redis_prefix):  # noqa: F811
    account_id, email = run(make_user(database_url))
    key, secret = run(_new_key(database_url, account_id))
    api = {"Authorization": f"Bearer {secret}"}
    # a minute of trust in each server's cache: only the push explains a refusal
    settings = shared(redis_prefix, auth_cache_seconds="60")
    with ExitStack() as stack:
        servers = [stack.enter_context(ThreadedServer(create_app(dash_settings(**settings))))
                   for _ in range(2)]
        wait_subscribers(redis_prefix, 2)
        for server in servers:
            assert requests.get(server.url + "/api/balance/", headers=api).status_code == 200
        http = login(servers[0].url, email)
        response = http.post(servers[0].url + f"/keys/{key.id}/revoke", allow_redirects=False,
                             data={"csrf_token": page_token(http, servers[0].url + "/keys")})
        assert response.status_code == 303
        refused = requests.get(servers[1].url + "/api/balance/", headers=api)
        for _ in range(100):  # the push takes milliseconds; the cache would take 60 s
            if refused.status_code == 401:
                break
            time.sleep(0.01)
            refused = requests.get(servers[1].url + "/api/balance/", headers=api)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "revoked_api_key"
