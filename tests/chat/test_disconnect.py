"""A client's disconnect never lowers the price.

A fake upstream bills 5,000 hidden reasoning tokens (never streamed) and sends its usage
event 0.5 s after the answer. Clients hang up before any content, after the first content
chunk and after the last one: each is charged exactly the upstream's usage, to the
nanodollar, because the gateway reads the upstream's stream to its end. With
`cancel_upstream_on_disconnect` (or when the drain runs out of time) the gateway cuts the
upstream off and charges the hold. An upstream that breaks off before its usage is charged
an estimate counted with the model's own tokenizer.
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from minitoolai.app import create_app
from minitoolai.chat import lifecycle as chat_lifecycle
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, ledger_entries, usage
from minitoolai.runtime import Runtime
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens
from tests.servers import ThreadedServer

SEED, OPENAI = "/api/chat-completions/", "/v1/chat/completions"
GPT5_IN, GPT5_OUT = 1_250, 10_000  # gpt-5: nanodollars per input / output token
MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini
CREDIT = 10**9
MAX_TOKENS = 6_000
CHUNKS, REASONING = 8, 5_000
# the usage event comes 0.5 s after the finish chunk; the first content 0.3 s after the
# headers; 50 ms between content chunks
PROMPT = f"[reasoning:{REASONING}] [late_usage:500] [late_first:300] [slow] [chunks:{CHUNKS}]" \
         " tell me about Alaska"
MESSAGES = [{"role": "user", "content": PROMPT}]
EXACT = count_prompt_tokens(MESSAGES) * GPT5_IN + (CHUNKS + REASONING) * GPT5_OUT
CONTENT = b'"content":"'


async def _state(database_url, account_id):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            account = (await conn.execute(select(accounts).where(
                accounts.c.id == account_id))).one()
            rows = (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
            charges = (await conn.execute(select(func.count(), func.coalesce(
                func.sum(ledger_entries.c.amount), 0)).where(
                ledger_entries.c.account_id == account_id,
                ledger_entries.c.kind == "charge"))).one()
    finally:
        await db.dispose()
    return account, rows, tuple(charges)


def settled(database_url, account_id, count, timeout=15.0):
    """The settlement of a stream whose client left comes after the drain: wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        account, rows, charges = run(_state(database_url, account_id))
        if len(rows) >= count and account.held == 0 or time.monotonic() > deadline:
            return account, rows, charges
        time.sleep(0.05)


def hang_up(port, path, key, body, when):
    """Send the request on a raw socket and close it at `when`: "before_content" (as soon
    as the response's headers are in), "after_first" (one content chunk) or "after_last"
    (every content chunk and the finish chunk, not the usage event). Returns what came."""
    payload = orjson.dumps(body)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: "
                     + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        received = b""
        while True:
            data = sock.recv(65536)
            assert data, f"the server closed first: {received!r}"
            received += data
            if b"\r\n\r\n" not in received:
                continue
            assert received.startswith(b"HTTP/1.1 200"), received
            if when == "before_content":
                break
            if when == "after_first" and received.count(CONTENT) >= 1:
                break
            if when == "after_last" and b'"finish_reason":"stop"' in received:
                break
    finally:
        sock.close()
    return received


@pytest.mark.parametrize("path", [SEED, OPENAI])
@pytest.mark.parametrize("when", ["before_content", "after_first", "after_last"])
def test_a_client_that_hangs_up_pays_the_upstreams_own_usage(server, database_url, upstream,
                                                            path, when):
    customer = run(make_customer(database_url, CREDIT))
    completed, dropped = upstream.completed, upstream.disconnects
    body = {"model": "gpt-5", "messages": MESSAGES, "max_completion_tokens": MAX_TOKENS,
            "stream": True}
    if path == OPENAI:
        body["stream_options"] = {"include_usage": True}
    received = hang_up(server.port, path, customer.key, body, when)
    assert b'"usage":{' not in received  # the client never saw the usage event
    content = received.count(CONTENT)
    assert content == {"before_content": 0, "after_first": 1, "after_last": CHUNKS}[when] \
        or when == "after_first" and 1 <= content < CHUNKS
    account, rows, charges = settled(database_url, customer.account_id, 1)
    assert len(rows) == 1
    row = rows[0]
    assert (row.status, row.estimated) == ("cancelled", False)
    assert (row.prompt_tokens, row.completion_tokens) == (count_prompt_tokens(MESSAGES),
                                                          CHUNKS + REASONING)
    assert row.cost == EXACT
    assert account.balance == CREDIT - EXACT and account.held == 0
    assert charges == (1, -EXACT)
    # the gateway read the upstream's stream to its end
    assert upstream.completed == completed + 1 and upstream.disconnects == dropped
    run(assert_ledger_ok(database_url))


def test_an_httpx_client_that_leaves_before_the_usage_pays_it(server, database_url):
    """The same through httpx's streaming API: read the answer, close before the usage."""
    customer = run(make_customer(database_url, CREDIT))
    body = {"model": "gpt-5", "messages": MESSAGES, "max_completion_tokens": MAX_TOKENS}
    with httpx.Client(base_url=server.url, timeout=10) as client, \
            client.stream("POST", SEED, headers=customer.headers, json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            assert '"usage":{' not in line
            if '"finish_reason":"stop"' in line:
                break
    account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated, r.cost) for r in rows] == [("cancelled", False, EXACT)]
    assert account.balance == CREDIT - EXACT and charges == (1, -EXACT)
    run(assert_ledger_ok(database_url))


def test_a_client_that_stays_pays_the_same(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    body = {"model": "gpt-5", "messages": MESSAGES, "max_completion_tokens": MAX_TOKENS}
    response = httpx.post(server.url + SEED, headers=customer.headers, json=body, timeout=10)
    usage_event = [orjson.loads(line[6:]) for line in response.text.splitlines()
                   if line.startswith("data: {")][-1]
    assert usage_event["usage"]["completion_tokens_details"]["reasoning_tokens"] == REASONING
    assert usage_event["usage"]["cost"] == EXACT / 1e9
    account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated, r.cost) for r in rows] == [("ok", False, EXACT)]
    assert account.balance == CREDIT - EXACT and charges == (1, -EXACT)
    run(assert_ledger_ok(database_url))


def _hold(messages, max_tokens, price_in, price_out):
    prompt_bound = sum(len(orjson.dumps(m)) for m in messages) + 16 + 8 * len(messages)
    return prompt_bound, prompt_bound * price_in + max_tokens * price_out


@pytest.mark.parametrize("when", ["before_content", "after_first", "after_last"])
def test_cancel_upstream_on_disconnect_charges_the_hold(chat_settings, database_url,
                                                        upstream, when):
    settings = chat_settings(chat={"cancel_upstream_on_disconnect": True})
    customer = run(make_customer(database_url, CREDIT))
    prompt_bound, hold = _hold(MESSAGES, MAX_TOKENS, GPT5_IN, GPT5_OUT)
    dropped = upstream.disconnects
    body = {"model": "gpt-5", "messages": MESSAGES, "max_completion_tokens": MAX_TOKENS}
    with ThreadedServer(create_app(settings)) as live:
        received = hang_up(live.port, SEED, customer.key, body, when)
        assert b'"usage":{' not in received
        account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated) for r in rows] == [("cancelled", True)]
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (prompt_bound, MAX_TOKENS)
    assert rows[0].cost == hold and account.balance == CREDIT - hold and account.held == 0
    assert charges == (1, -hold)
    deadline = time.monotonic() + 5  # the upstream request was dropped
    while upstream.disconnects == dropped and time.monotonic() < deadline:
        time.sleep(0.02)
    assert upstream.disconnects == dropped + 1
    run(assert_ledger_ok(database_url))


def test_a_drain_that_runs_out_of_time_charges_the_hold(chat_settings, database_url,
                                                        upstream):
    settings = chat_settings(chat={"drain_after_disconnect_seconds": 0.3})
    customer = run(make_customer(database_url, CREDIT))
    messages = [{"role": "user", "content": f"[reasoning:{REASONING}] [late_usage:3000] hi"}]
    _, hold = _hold(messages, MAX_TOKENS, GPT5_IN, GPT5_OUT)
    completed = upstream.completed
    body = {"model": "gpt-5", "messages": messages, "max_completion_tokens": MAX_TOKENS}
    with ThreadedServer(create_app(settings)) as live:
        hang_up(live.port, SEED, customer.key, body, "after_last")
        account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated, r.cost) for r in rows] == [("cancelled", True, hold)]
    assert account.balance == CREDIT - hold and charges == (1, -hold)
    assert upstream.completed == completed  # cut off before its usage
    run(assert_ledger_ok(database_url))


# bpe-openai's Python wrapper (not used by the server) opens its data the deprecated way
@pytest.mark.filterwarnings("ignore:open_binary is deprecated:DeprecationWarning")
def test_an_upstream_that_breaks_off_is_estimated_with_the_models_tokenizer(server,
                                                                           database_url):
    """No usage ever came: the prompt and the delivered text are counted with o200k_base
    (here 20 kB of digits: o200k_base makes 6,667 tokens of them, bytes / 4 only 5,000)."""
    customer = run(make_customer(database_url, CREDIT))
    text = "[cut] [chunks:10] " + "0123456789" * 2000
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    response = httpx.post(server.url + SEED, headers=customer.headers, timeout=10,
                          json={"model": "gpt-4o-mini", "messages": messages})
    assert response.status_code == 200 and '"upstream_failed"' in response.text
    # an independent count: bpe-openai's tiktoken-compatible API, OpenAI's chat framing
    import bpe_openai
    enc = bpe_openai.encoding_for_model("gpt-4o-mini")
    prompt = 3 + sum(3 + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
                     for m in messages)
    delivered = "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content", "")
                        for line in response.text.splitlines()
                        if line.startswith("data: {") and '"choices":[{' in line)
    assert delivered == "Alaska is the largest U.S."
    completion = len(enc.encode(delivered))
    assert prompt > len(text.encode()) // 4 + 16 and completion == 8
    expected = prompt * MINI_IN + completion * MINI_OUT
    account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated) for r in rows] == [("error", True)]
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (prompt, completion)
    assert rows[0].cost == expected and account.balance == CREDIT - expected
    assert charges == (1, -expected)
    run(assert_ledger_ok(database_url))


@pytest.mark.parametrize("cancel", [False, True])
async def test_a_response_dropped_before_it_began_still_pays_its_way(chat_settings,
                                                                    database_url, cancel):
    """The ASGI server fails the very first send (the client was already gone): nobody
    iterates the relay, so the gateway reads the upstream itself (or, configured to cancel,
    cuts it and charges the hold)."""
    settings = chat_settings(chat={"cancel_upstream_on_disconnect": cancel})
    runtime = Runtime.build(settings)
    await chat_lifecycle.start(runtime)
    try:
        customer = await make_customer(database_url, CREDIT)
        principal = await runtime.auth.authenticate(f"Bearer {customer.key}")
        body = {"model": "gpt-5", "messages": MESSAGES, "max_completion_tokens": MAX_TOKENS}
        response = await runtime.chat.respond(principal, body, endpoint=SEED,
                                              openai_style=False)

        async def receive():
            await asyncio.sleep(3600)

        async def send(message):
            raise OSError("the client went away")

        with pytest.raises(OSError):
            await response({"type": "http"}, receive, send)
        async with asyncio.timeout(15):  # the read and the settlement run in tasks
            while runtime.holds.live:
                await runtime.holds.drain()
                await asyncio.sleep(0.01)
        account, rows, charges = await _state(database_url, customer.account_id)
    finally:
        await chat_lifecycle.stop(runtime)
        await runtime.db.dispose()
    _, hold = _hold(MESSAGES, MAX_TOKENS, GPT5_IN, GPT5_OUT)
    expected = hold if cancel else EXACT
    assert [(r.status, r.estimated, r.cost) for r in rows] == [("cancelled", cancel, expected)]
    assert account.balance == CREDIT - expected and account.held == 0
    assert charges == (1, -expected)
    await assert_ledger_ok(database_url)


def test_without_the_models_tokenizer_the_estimate_is_bounded(chat_settings, database_url):
    """A self-hosted model (tokenizer unknown) that breaks off: the prompt at its bound, one
    token per event that carried text."""
    settings = chat_settings(chat={"models": [{
        "id": "llama-local", "provider": "openai", "upstream_model": "llama-3.1-8b",
        "input_price": "1", "output_price": "2"}]})
    customer = run(make_customer(database_url, CREDIT))
    messages = [{"role": "user", "content": "[cut] [chunks:10] 0123456789"}]
    prompt_bound, _ = _hold(messages, 0, 0, 0)
    expected = prompt_bound * 1_000 + 5 * 2_000
    with ThreadedServer(create_app(settings)) as live:
        response = httpx.post(live.url + SEED, headers=customer.headers, timeout=10,
                              json={"model": "llama-local", "messages": messages})
        assert response.status_code == 200 and '"upstream_failed"' in response.text
        account, rows, charges = settled(database_url, customer.account_id, 1)
    assert [(r.status, r.estimated) for r in rows] == [("error", True)]
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (prompt_bound, 5)
    assert rows[0].cost == expected and account.balance == CREDIT - expected
    assert charges == (1, -expected)
    run(assert_ledger_ok(database_url))
