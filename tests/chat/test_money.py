"""Money through the chat gateway: exact charges after a mix of outcomes, disconnects,
broken streams, and 200 concurrent requests against credit for about 50."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import orjson
import requests
from sqlalchemy import select

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, usage
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens
from tests.servers import ThreadedServer, free_port

URL = "/api/chat-completions/"
MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token


async def _rows(database_url, account_id):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            account = (await conn.execute(select(accounts).where(
                accounts.c.id == account_id))).one()
            rows = (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
    finally:
        await db.dispose()
    return account, rows


def wait_settled(database_url, account_id, count, timeout=10.0):
    """Settlement of a cut-short stream runs after the client is gone: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        account, rows = run(_rows(database_url, account_id))
        if len(rows) >= count and account.held == 0 or time.monotonic() > deadline:
            return account, rows
        time.sleep(0.05)


def msg(text):
    return [{"role": "user", "content": text}]


def test_mix_of_outcomes_charges_exactly_what_was_served(server, database_url):
    credit = 10**9
    customer = run(make_customer(database_url, credit))
    post = lambda body, **kw: requests.post(server.url + URL, headers=customer.headers,
                                            json=body, **kw)
    expected = 0
    # served, streamed and not
    for text, stream in (("one two three", True), ("four five", False), ("[chunks:12]", True)):
        r = post({"model": "gpt-4o-mini", "messages": msg(text), "stream": stream})
        assert r.status_code == 200
        chunks = 12 if "chunks" in text else 5
        expected += count_prompt_tokens(msg(text)) * MINI_IN + chunks * MINI_OUT
    # refused before anything was reserved, or failed upstream: free
    assert post({"model": "gpt-4o-mini", "messages": msg("x"), "temperature": 9}).status_code \
        == 400
    assert post({"model": "gpt-4o-mini", "messages": msg("[fail:503]")}).status_code == 502
    account, rows = wait_settled(database_url, customer.account_id, 4)
    assert account.balance == credit - expected
    assert sum(r.cost for r in rows) == expected
    assert [r.status for r in rows] == ["ok", "ok", "ok", "error"]
    assert not any(r.estimated for r in rows)
    run(assert_ledger_ok(database_url))


def test_client_disconnect_mid_stream_is_charged_the_upstreams_usage(server, database_url,
                                                                      upstream):
    """The gateway reads the upstream to its end for a client that left (more in
    test_disconnect.py): the charge is the upstream's own count, not an estimate."""
    customer = run(make_customer(database_url, 10**9))
    before, completed = upstream.disconnects, upstream.completed
    body = {"model": "gpt-4o-mini", "messages": msg("[slow] [chunks:40]")}
    with requests.post(server.url + URL, headers=customer.headers, json=body,
                       stream=True) as response:
        lines = response.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert got[0].startswith(b"data: ")
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert len(rows) == 1 and rows[0].status == "cancelled" and not rows[0].estimated
    assert rows[0].completion_tokens == 40
    expected = count_prompt_tokens(msg("[slow] [chunks:40]")) * MINI_IN + 40 * MINI_OUT
    assert rows[0].cost == expected
    assert account.held == 0 and account.balance == 10**9 - expected
    assert upstream.disconnects == before and upstream.completed == completed + 1
    run(assert_ledger_ok(database_url))


def test_upstream_cut_short_is_an_error_charged_an_estimate(server, database_url):
    customer = run(make_customer(database_url, 10**9))
    response = requests.post(server.url + URL, headers=customer.headers,
                             json={"model": "gpt-4o-mini", "messages": msg("[cut] [chunks:10]")})
    assert response.status_code == 200
    assert '"upstream_failed"' in response.text  # the in-band error event
    account, rows = wait_settled(database_url, customer.account_id, 1)
    # "Alaska is the largest U.S." was delivered: 8 tokens in o200k_base
    assert rows[0].status == "error" and rows[0].estimated and rows[0].completion_tokens == 8
    assert account.balance == 10**9 - rows[0].cost
    run(assert_ledger_ok(database_url))


def test_failure_before_first_byte_is_retried_on_the_fallback_route(chat_settings,
                                                                   database_url, upstream):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    settings = chat_settings(chat={
        "providers": {"primary": {"base_url": dead, "api_key": "k"},
                      "openai": {"base_url": upstream.base_url, "api_key": "sk-upstream"}},
        "models": [{"id": "gpt-4o-mini", "provider": "primary",
                    "fallback_providers": ["openai"]}]})
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + URL, headers=customer.headers,
                                 json={"model": "gpt-4o-mini", "messages": msg("hi")})
        assert response.status_code == 200 and "[DONE]" in response.text
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert rows[0].cost == count_prompt_tokens(msg("hi")) * MINI_IN + 5 * MINI_OUT
    run(assert_ledger_ok(database_url))


def test_200_concurrent_requests_never_overspend(chat_settings, database_url):
    body = {"model": "gpt-4o-mini", "messages": msg("[slow] hi"), "max_completion_tokens": 100}
    prompt_bound = len(orjson.dumps(msg("[slow] hi")[0])) + 16 + 8  # the message as JSON
    hold = prompt_bound * MINI_IN + 100 * MINI_OUT
    credit = hold * 50 + hold // 2  # room for about 50 holds at once
    customer = run(make_customer(database_url, credit))

    async def fire(server):
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.url, limits=limits,
                                     timeout=60) as client:
            async def one():
                response = await client.post(URL, headers=customer.headers, json=body)
                return response.status_code, response.text
            return await asyncio.gather(*(one() for _ in range(200)))

    with ThreadedServer(create_app(chat_settings(rate_limit_per_minute="0"))) as server:
        results = run(fire(server))
    served = [t for s, t in results if s == 200]
    refused = [t for s, t in results if s == 402]
    assert len(served) + len(refused) == 200
    assert all("data: [DONE]" in t for t in served)
    assert 50 <= len(served) < 200 and refused
    account, rows = wait_settled(database_url, customer.account_id, len(served))
    assert len(rows) == len(served)  # every served request was held and settled, once
    assert account.balance == credit - sum(r.cost for r in rows) >= 0
    assert account.held == 0
    run(assert_ledger_ok(database_url))


def test_a_stream_longer_than_half_its_hold_ttl_keeps_its_hold(chat_settings, database_url):
    # hold_ttl 2 s and a 4 s stream: the gateway must extend the hold, or the sweeper
    # (every 0.2 s here) would release it and the settlement would find nothing to charge
    settings = chat_settings(hold_ttl_seconds="2", sweep_interval_seconds="0.2")
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(settings)) as live:
        response = requests.post(live.url + URL, headers=customer.headers, json={
            "model": "gpt-4o-mini", "messages": msg("[slow] [chunks:80]")})
        assert response.status_code == 200 and "[DONE]" in response.text
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert rows[0].status == "ok" and not rows[0].estimated
    assert rows[0].cost == count_prompt_tokens(msg("[slow] [chunks:80]")) * MINI_IN + 80 * MINI_OUT
    assert account.balance == 10**9 - rows[0].cost
    run(assert_ledger_ok(database_url))


def test_usage_event_with_spaces_is_billed_exactly(server, database_url):
    """Upstreams that write `"usage": {` (json.dumps, llama.cpp's server) bill exactly."""
    customer = run(make_customer(database_url, 10**9))
    response = requests.post(server.url + URL, headers=customer.headers,
                             json={"model": "gpt-4o-mini", "messages": msg("[spaced] hi")})
    assert response.status_code == 200
    usage_line = [line for line in response.text.splitlines() if '"choices": []' in line
                  or '"choices":[]' in line][0]
    expected = count_prompt_tokens(msg("[spaced] hi")) * MINI_IN + 5 * MINI_OUT
    assert '"cost"' in usage_line
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert rows[0].cost == expected and not rows[0].estimated
    assert account.balance == 10**9 - expected
    run(assert_ledger_ok(database_url))


def test_the_cost_shown_is_the_cost_charged_even_past_the_hold(server, database_url):
    """An upstream reporting more than the hold can cover (here: more completion tokens than
    max_completion_tokens) is charged the hold, and the client is told exactly that."""
    customer = run(make_customer(database_url, 10**9))
    text = "[chunks:40] hi"
    response = requests.post(server.url + URL, headers=customer.headers, json={
        "model": "gpt-4o-mini", "messages": msg(text), "max_completion_tokens": 2})
    usage = [json.loads(line[6:]) for line in response.text.splitlines()
             if line.startswith("data: {")][-1]["usage"]
    hold = (len(orjson.dumps(msg(text)[0])) + 16 + 8) * MINI_IN + 2 * MINI_OUT
    assert usage["completion_tokens"] == 40
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert rows[0].cost == hold and usage["cost"] == hold / 1e9
    assert account.balance == 10**9 - hold
    run(assert_ledger_ok(database_url))


def test_every_forwarded_message_field_counts_in_the_hold(server, database_url):
    """A field the upstream is sent (here 20 kB of function_call arguments) is in the bound,
    so a request that cannot cover it is refused instead of being billed at a capped hold."""
    big = {"role": "assistant", "content": None,
           "tool_calls": [{"id": "c1", "type": "function",
                           "function": {"name": "f", "arguments": "x" * 20_000}}]}
    messages = [{"role": "user", "content": "hi"}, big, {"role": "user", "content": "go"}]
    hold_without = (2 + 2 + 16 + 3 * 8) * MINI_IN + 10 * MINI_OUT
    customer = run(make_customer(database_url, hold_without * 20))  # far below 20k tokens
    response = requests.post(server.url + URL, headers=customer.headers, json={
        "model": "gpt-4o-mini", "messages": messages, "max_completion_tokens": 10})
    assert response.status_code == 402, response.text
    run(assert_ledger_ok(database_url))


def test_a_client_that_stops_reading_past_the_ttl_is_still_charged(chat_settings,
                                                                   database_url):
    """The server waits in its send while the client does not read; the hold must be
    renewed meanwhile, or the sweeper would free it and the stream would be free."""
    settings = chat_settings(hold_ttl_seconds="1", sweep_interval_seconds="0.2")
    customer = run(make_customer(database_url, 10**10))
    text = "[chunks:30000] hi"
    with ThreadedServer(create_app(settings)) as live:
        with requests.post(live.url + URL, headers=customer.headers, stream=True, json={
                "model": "gpt-4o-mini", "messages": msg(text),
                "max_completion_tokens": 30000}) as response:
            chunks = response.iter_content(chunk_size=65536)
            next(chunks)
            time.sleep(3)  # three TTLs without reading: the server's send is blocked
            body = b"".join(chunks)
        assert body.endswith(b"data: [DONE]\n\n")
    account, rows = wait_settled(database_url, customer.account_id, 1)
    assert [r.status for r in rows] == ["ok"]
    assert rows[0].cost == count_prompt_tokens(msg(text)) * MINI_IN + 30000 * MINI_OUT
    run(assert_ledger_ok(database_url))
