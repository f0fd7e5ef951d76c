"""Every error status of the chat endpoints: the right code, the OpenAI envelope, no charge."""

from __future__ import annotations

import pytest
import requests

from minitoolai.accounts.store import revoke_key
from minitoolai.app import create_app
from minitoolai.db.engine import Database
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import ThreadedServer, free_port

URL = "/api/chat-completions/"
HELLO = [{"role": "user", "content": "hello"}]


def check(response, status, code=None, param=None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code:
        assert error["code"] == code, error
    if param:
        assert error["param"] == param, error
    return error


def untouched(database_url, customer, credit):
    async def balance():
        db = Database(database_url, pool_size=1)
        try:
            async with db.read() as conn:
                row = (await conn.exec_driver_sql(
                    f"SELECT balance, held FROM accounts WHERE id = {customer.account_id}")).one()
                usage_rows = (await conn.exec_driver_sql("SELECT count(*) FROM usage")).scalar()
                entries = (await conn.exec_driver_sql(
                    "SELECT count(*) FROM ledger_entries WHERE kind = 'charge'")).scalar()
        finally:
            await db.dispose()
        return row.balance, row.held, entries, usage_rows
    balance, held, charges, _ = run(balance())
    assert (balance, held, charges) == (credit, 0, 0)
    run(assert_ledger_ok(database_url))


BAD_BODIES = [
    ({"messages": HELLO}, "model"),
    ({"model": 5, "messages": HELLO}, "model"),
    ({"model": "gpt-4o"}, "messages"),
    ({"model": "gpt-4o", "messages": []}, "messages"),
    ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     "messages[0].content[0].type"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.bmp"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}]}]},
     "messages[0].content[0].image_url.url"),
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "max"}}]}]},
     "messages[0].content[0].image_url.detail"),
    ({"model": "gpt-4o", "messages": [{"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
     "messages[0].content[0]"),
    ({"model": "gpt-4o", "messages": HELLO, "temperature": 2.5}, "temperature"),
    ({"model": "gpt-4o", "messages": HELLO, "temperature": "hot"}, "temperature"),
    ({"model": "gpt-4o", "messages": HELLO, "max_completion_tokens": 0},
     "max_completion_tokens"),
    ({"model": "gpt-4o", "messages": HELLO, "max_completion_tokens": 1.5},
     "max_completion_tokens"),
    ({"model": "gpt-4o", "messages": HELLO, "reasoning_effort": "low"}, "reasoning_effort"),
    ({"model": "gpt-5", "messages": HELLO, "reasoning_effort": "none"}, "reasoning_effort"),
    ({"model": "gpt-5.1", "messages": HELLO, "reasoning_effort": "minimal"},
     "reasoning_effort"),
    ({"model": "gpt-4o", "messages": HELLO, "stream": "yes"}, "stream"),
    ({"model": "gpt-4o", "messages": HELLO, "n": 0}, "n"),
    ({"model": "gpt-4o", "messages": HELLO, "n": "2"}, "n"),
    ({"model": "gpt-4o", "messages": HELLO, "frobnicate": True}, "frobnicate"),
]


@pytest.mark.parametrize("body,param", BAD_BODIES, ids=[p for _, p in BAD_BODIES])
def test_400_names_the_field(server, database_url, body, param):
    customer = run(make_customer(database_url, 10**9))
    check(requests.post(server.url + URL, headers=customer.headers, json=body), 400,
          param=param)
    untouched(database_url, customer, 10**9)


def test_400_on_bad_json_and_non_object(server, database_url):
    customer = run(make_customer(database_url, 10**9))
    check(requests.post(server.url + URL, headers=customer.headers, data=b"{nope"), 400)
    check(requests.post(server.url + URL, headers=customer.headers, data=b""), 400)
    check(requests.post(server.url + URL, headers=customer.headers, json=[1, 2]), 400)
    untouched(database_url, customer, 10**9)


def test_400_image_on_a_model_without_vision(chat_settings, database_url):
    settings = chat_settings(chat={"models": [{"id": "text-only", "vision": False,
                                                "input_price": "1", "output_price": "2"}]})
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(settings)) as live:
        body = {"model": "text-only", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}
        check(requests.post(live.url + URL, headers=customer.headers, json=body), 400,
              code="image_input_not_supported")
    untouched(database_url, customer, 10**9)


def test_401_missing_unknown_and_revoked_keys(server, database_url):
    customer = run(make_customer(database_url, 10**9))
    body = {"model": "gpt-4o", "messages": HELLO}
    check(requests.post(server.url + URL, json=body), 401, code="missing_api_key")
    check(requests.post(server.url + URL, json=body, headers={"Authorization": "Basic x"}),
          401, code="invalid_authorization_header")
    check(requests.post(server.url + URL, json=body,
                        headers={"Authorization": "Bearer mtai-unknown"}), 401,
          code="invalid_api_key")

    async def revoke():
        db = Database(database_url, pool_size=1)
        try:
            await revoke_key(db, customer.key_id)
        finally:
            await db.dispose()
    run(revoke())
    # the server trusts a cached lookup for auth_cache_seconds; this app uses the default 2 s
    import time
    time.sleep(2.1)
    check(requests.post(server.url + URL, json=body, headers=customer.headers), 401,
          code="revoked_api_key")
    untouched(database_url, customer, 10**9)


def test_402_insufficient_credit_says_balance_and_hold(server, database_url):
    customer = run(make_customer(database_url, 1_000))
    response = requests.post(server.url + URL, headers=customer.headers,
                             json={"model": "gpt-4o", "messages": HELLO})
    error = check(response, 402, code="insufficient_credit")
    assert "$0.000001" in error["message"] and "hold" in error["message"]
    untouched(database_url, customer, 1_000)


def test_404_unknown_model_and_route(server, database_url):
    customer = run(make_customer(database_url, 10**9))
    check(requests.post(server.url + URL, headers=customer.headers,
                        json={"model": "gpt-9", "messages": HELLO}), 404,
          code="model_not_found", param="model")
    check(requests.get(server.url + "/api/nothing", headers=customer.headers), 404)
    untouched(database_url, customer, 10**9)


def test_405_is_an_envelope_too(server):
    check(requests.get(server.url + URL), 405, code="method_not_allowed")


def test_413_body_too_large(chat_settings, database_url):
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(chat_settings(max_body_bytes="2048"))) as live:
        big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
        check(requests.post(live.url + URL, headers=customer.headers, json=big), 413)

        def chunked():
            yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
            yield b"y" * 4000
            yield b'"}]}'
        check(requests.post(live.url + URL, headers=customer.headers, data=chunked()), 413)
    untouched(database_url, customer, 10**9)


def test_429_per_key_rate_limit(chat_settings, database_url):
    customer = run(make_customer(database_url, 10**9))
    other = run(make_customer(database_url, 10**9))
    settings = chat_settings(rate_limit_per_minute="60", rate_limit_burst="2")
    with ThreadedServer(create_app(settings)) as live:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "[fail:400]"}]}
        for _ in range(2):
            requests.post(live.url + URL, headers=customer.headers, json=body)
        response = requests.post(live.url + URL, headers=customer.headers, json=body)
        check(response, 429, code="rate_limit_exceeded")
        assert int(response.headers["Retry-After"]) >= 1
        # the limit is per key: another key is not affected
        assert requests.post(live.url + URL, headers=other.headers,
                             json=body).status_code == 400
    untouched(database_url, customer, 10**9)


def test_502_upstream_failure_and_bad_upstream_key(chat_settings, database_url, upstream):
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(chat_settings())) as live:
        check(requests.post(live.url + URL, headers=customer.headers, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "[fail:500]"}]}),
            502, code="upstream_failed")
    settings = chat_settings(chat={"providers": {"openai": {"base_url": upstream.base_url,
                                                            "api_key": "sk-wrong"}}})
    with ThreadedServer(create_app(settings)) as live:
        error = check(requests.post(live.url + URL, headers=customer.headers,
                                    json={"model": "gpt-4o", "messages": HELLO}), 502)
        assert "credentials" in error["message"]
    untouched(database_url, customer, 10**9)


def test_502_unreachable_upstream(chat_settings, database_url):
    customer = run(make_customer(database_url, 10**9))
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = chat_settings(chat={"providers": {"openai": {"base_url": dead, "api_key": "k"}}})
    with ThreadedServer(create_app(settings)) as live:
        check(requests.post(live.url + URL, headers=customer.headers,
                            json={"model": "gpt-4o", "messages": HELLO}), 502)
    untouched(database_url, customer, 10**9)


def test_503_no_provider_configured(make_settings, database_url):
    customer = run(make_customer(database_url, 10**9))
    settings = make_settings(chat={"builtin_local_model": False})  # no OPENAI_API_KEY at all
    with ThreadedServer(create_app(settings)) as live:
        error = check(requests.post(live.url + URL, headers=customer.headers,
                                    json={"model": "gpt-4o", "messages": HELLO}), 503,
                      code="no_provider")
        assert "openai" in error["message"]
        models = requests.get(live.url + "/api/models/").json()["data"]
        assert {m["id"]: m["available"] for m in models}["gpt-4o"] is False
    untouched(database_url, customer, 10**9)


def test_504_upstream_timeout(chat_settings, database_url, upstream):
    customer = run(make_customer(database_url, 10**9))
    settings = chat_settings(chat={"providers": {"openai": {
        "base_url": upstream.base_url, "api_key": "sk-upstream", "read_timeout": 0.5}}})
    with ThreadedServer(create_app(settings)) as live:
        check(requests.post(live.url + URL, headers=customer.headers, json={
            "model": "gpt-4o", "messages": [{"role": "user", "content": "[hang]"}]}),
            504, code="upstream_timeout")
    untouched(database_url, customer, 10**9)
