"""The dashboard's login throttle counted once for the whole platform through Redis: wrong
passwords spread over three servers are refused after the limit, not three times it."""

from __future__ import annotations

from contextlib import ExitStack

import requests

from minitoolai.app import create_app
from tests.dashboard.conftest import PASSWORD, csrf_of, make_user
from tests.redis_fixtures import REDIS_URL, TEST_REDIS_TIMEOUT, redis_prefix  # noqa: F401
from tests.servers import ThreadedServer


def attempt(server, email, password):
    http = requests.Session()
    token = csrf_of(http.get(server.url + "/login").text)
    return http.post(server.url + "/login", data={"csrf_token": token, "email": email,
                                                  "password": password},
                     allow_redirects=False).status_code


async def test_wrong_passwords_over_three_servers_count_once(dash_settings, database_url,
                                                             redis_prefix):  # noqa: F811
    _, email = await make_user(database_url)
    _, other = await make_user(database_url)
    shared = {"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix,
              "redis_timeout_seconds": TEST_REDIS_TIMEOUT,
              "dashboard": {"login_failures_per_15min": 4}}
    with ExitStack() as stack:
        servers = [stack.enter_context(ThreadedServer(create_app(dash_settings(**shared))))
                   for _ in range(3)]
        statuses = [attempt(servers[i % 3], email, "wrong") for i in range(6)]
        assert statuses == [401] * 4 + [429] * 2
        # every server refuses even the right password now; another account is not affected
        assert [attempt(s, email, PASSWORD) for s in servers] == [429] * 3
        assert attempt(servers[0], other, PASSWORD) == 303
