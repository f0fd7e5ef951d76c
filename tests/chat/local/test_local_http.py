"""The local models through the live server: the seed's requests code, curl-like streaming,
the openai SDK via /v1, exact charges, disconnects, fairness and the full queue."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import openai
import pytest
import requests
from sqlalchemy import select

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from tests.chat.local.conftest import chat_request
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import ThreadedServer

CREDIT = 1_000_000_000  # 1 USD
# USD per 1M tokens -> nanodollars per token: 2.5 -> 2500, 10 -> 10000
PRICED = {"id": "smollm2-priced", "path": "builtin", "input_price": "2.5",
          "output_price": "10", "queue_size": 16}
ONE_SLOT = {"id": "smollm2-one-slot", "path": "builtin", "queue_size": 1}
# greedy, SmolLM2 answers this with a poem that never stops by itself
LONG_PROMPT = "Write a long poem about autumn leaves."
# What SmolLM2-135M answers, even greedily, depends on the CPU: llama.cpp's SIMD kernels
# round differently (on an AVX-512 AMD EPYC it answers this in French nonsense, on others
# "Paris"), so these tests check that an answer is relayed and charged, not what it says;
# test_local_provider.py checks the relayed text against llama-cpp-python's own.
MESSAGES = [
    {"role": "developer", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def server(gguf_path, make_settings):
    # preloaded, so that timing and ordering tests measure the queue, not the first load
    settings = make_settings(chat={"builtin_local_model": True, "preload_local_models": True,
                                   "local_models": [PRICED, ONE_SLOT]})
    app = create_app(settings)
    with ThreadedServer(app) as live:
        live.runtime = app.state.runtime
        yield live


def test_models_load_on_first_use(gguf_path, make_settings, database_url):
    settings = make_settings(chat={"builtin_local_model": True})
    app = create_app(settings)
    customer = run(make_customer(database_url, CREDIT))
    with ThreadedServer(app) as live:
        provider = app.state.runtime.chat.providers["local:smollm2-135m"]
        assert provider.waiting == 0 and provider._queue is None  # not loaded at start
        models = requests.get(live.url + "/api/models/").json()["data"]
        assert {m["id"]: m["available"] for m in models}["smollm2-135m"] is True
        response = requests.post(live.url + "/api/chat-completions/", headers=customer.headers,
                                 json={"model": "smollm2-135m", "max_completion_tokens": 5,
                                       "messages": [{"role": "user", "content": "Hi"}]})
        assert response.status_code == 200 and "[DONE]" in response.text
        assert provider._queue is not None
    run(assert_ledger_ok(database_url))


async def usage_rows(database_url, account_id):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            return (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
    finally:
        await db.dispose()


def provider_of(server, model_id):
    return server.runtime.chat.providers[f"local:{model_id}"]


def balance_nano(server, customer) -> tuple[int, int]:
    body = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return int(Decimal(body["balance"]) * 10**9), int(Decimal(body["held"]) * 10**9)


def seed_stream(url, key, data) -> list[str]:
    """The seed's Python example (requests, stream=True, iter_lines)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    response = requests.post(url, headers=headers, json=data, stream=True)
    assert response.status_code == 200, response.text
    lines = []
    for line in response.iter_lines():
        if line:
            lines.append(line.decode("utf-8"))
    return lines


def parse_seed_stream(lines: list[str]) -> tuple[str, dict, list[dict]]:
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    chunks, usage_event = events[:-1], events[-1]
    assert usage_event["choices"] == [] and usage_event["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["usage"] is None for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    return text, usage_event["usage"], chunks


def test_builtin_model_answers_the_seed_client_for_free(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    lines = seed_stream(server.url + "/api/chat-completions/", customer.key,
                        {"model": "smollm2-135m", "messages": MESSAGES, "temperature": 0,
                         "max_completion_tokens": 30})
    text, usage, chunks = parse_seed_stream(lines)
    assert text.strip()
    assert chunks[0]["model"] == "smollm2-135m"
    assert usage["prompt_tokens"] > 10 and 1 <= usage["completion_tokens"] <= 30
    assert usage["cost"] == 0
    assert balance_nano(server, customer) == (CREDIT, 0)
    run(assert_ledger_ok(database_url))


def test_priced_local_model_streams_and_charges_exactly(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    lines = seed_stream(server.url + "/api/chat-completions", customer.key,
                        {"model": "smollm2-priced", "messages": MESSAGES,
                         "temperature": 0.7, "max_completion_tokens": 40})
    text, usage, _ = parse_seed_stream(lines)
    assert text.strip()
    cost = usage["prompt_tokens"] * 2500 + usage["completion_tokens"] * 10000
    assert usage["cost"] == cost / 1e9
    assert balance_nano(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


def test_priced_local_model_non_streamed(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    response = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                             json={"model": "smollm2-priced", "messages": MESSAGES,
                                   "stream": False, "temperature": 0,
                                   "max_completion_tokens": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].strip()
    usage = body["usage"]
    cost = usage["prompt_tokens"] * 2500 + usage["completion_tokens"] * 10000
    assert usage["cost"] == cost / 1e9
    assert balance_nano(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


def test_short_prompt_without_system_is_charged_in_full(server, database_url):
    """SmolLM2's template adds a default system prompt (~20 tokens) to "Hi": the charge must
    still be exact, so the hold must cover it."""
    customer = run(make_customer(database_url, CREDIT))
    response = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                             json={"model": "smollm2-priced", "stream": False,
                                   "messages": [{"role": "user", "content": "Hi"}],
                                   "temperature": 1.5, "max_completion_tokens": 3})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] > 20
    cost = usage["prompt_tokens"] * 2500 + usage["completion_tokens"] * 10000
    assert usage["cost"] == cost / 1e9
    wait_until(lambda: balance_nano(server, customer)[1] == 0, "the hold to be settled")
    assert balance_nano(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


def test_openai_sdk_through_v1(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    assert "smollm2-135m" in {m.id for m in client.models.list()}

    completion = client.chat.completions.create(
        model="smollm2-priced", messages=MESSAGES, temperature=0, max_completion_tokens=30)
    assert completion.choices[0].message.content.strip()
    spent = completion.usage.prompt_tokens * 2500 + completion.usage.completion_tokens * 10000

    stream = client.chat.completions.create(
        model="smollm2-priced", messages=MESSAGES, max_completion_tokens=20, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens <= 20
    spent += usage.prompt_tokens * 2500 + usage.completion_tokens * 10000

    # without include_usage the gateway drops the usage chunk, but still charges for it
    plain = list(client.chat.completions.create(
        model="smollm2-135m", messages=MESSAGES, max_completion_tokens=10, stream=True))
    assert all(c.usage is None and c.choices for c in plain)
    assert balance_nano(server, customer) == (CREDIT - spent, 0)
    run(assert_ledger_ok(database_url))


def wait_until(condition, what, limit=30.0):
    """Poll for a state the server reaches on its own (a bound against hanging, not a timing
    assertion: speed is measured in bench/)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_client_disconnect_stops_the_model(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    provider = provider_of(server, "smollm2-priced")
    response = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                             json={"model": "smollm2-priced", "max_completion_tokens": 1000,
                                   "messages": [{"role": "user",
                                                 "content": LONG_PROMPT}],
                                   "temperature": 0},
                             stream=True)
    lines = response.iter_lines()
    content = []
    for line in lines:
        if line and b'"content"' in line:
            content.append(line)
            if len(content) >= 3:
                break
    job = provider._queue.running
    assert job is not None
    response.close()  # the client hangs up mid-generation
    wait_until(lambda: job.cancelled.is_set(), "the generation to be cancelled")
    wait_until(lambda: provider._queue.running is None, "the model to be free")
    # the model is free for the next client
    lines = seed_stream(server.url + "/api/chat-completions/", customer.key,
                        {"model": "smollm2-priced", "messages": MESSAGES,
                         "max_completion_tokens": 10})
    parse_seed_stream(lines)
    wait_until(lambda: balance_nano(server, customer)[1] == 0, "the hold to be settled")
    # and the cut-short stream was charged exactly what the model computed: its prompt and
    # the tokens generated until it stopped (the 3 the client read, and at most a few more)
    rows = run(usage_rows(database_url, customer.account_id))
    assert sorted(r.status for r in rows) == ["cancelled", "ok"]
    cut, served = sorted(rows, key=lambda r: r.status)
    assert not cut.estimated and not served.estimated
    assert 3 <= cut.completion_tokens <= len(content) + 3
    assert cut.prompt_tokens == run(provider.count_prompt_tokens(chat_request(LONG_PROMPT)))
    assert cut.cost == cut.prompt_tokens * 2500 + cut.completion_tokens * 10000
    balance, _ = balance_nano(server, customer)
    assert balance == CREDIT - cut.cost - served.cost
    run(assert_ledger_ok(database_url))


def test_a_client_that_leaves_the_queue_pays_its_prompt_only(server, database_url):
    """A queued request whose client hangs up leaves the queue at once; nothing was
    generated for it, and its prompt is charged exactly (as for every request)."""
    customer = run(make_customer(database_url, CREDIT))
    provider = provider_of(server, "smollm2-priced")
    long = {"model": "smollm2-priced", "max_completion_tokens": 1000, "temperature": 0,
            "messages": [{"role": "user", "content": LONG_PROMPT}]}
    first = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                          json=long, stream=True)
    next(line for line in first.iter_lines() if b'"content"' in line)  # it generates
    second = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                           json=long, stream=True)
    assert second.status_code == 200, second.text
    wait_until(lambda: provider.waiting == 1 or provider._queue.running is None,
               "the second request to wait")
    assert provider.waiting == 1, "the first generation ended by itself"
    second.close()
    wait_until(lambda: provider.waiting == 0, "the second request to leave the queue")
    first.close()
    wait_until(lambda: balance_nano(server, customer)[1] == 0, "the holds to be settled")
    rows = run(usage_rows(database_url, customer.account_id))
    prompt = run(provider.count_prompt_tokens(chat_request(LONG_PROMPT)))
    queued = [r for r in rows if r.completion_tokens == 0]
    assert len(rows) == 2 and len(queued) == 1
    assert (queued[0].status, queued[0].estimated) == ("cancelled", False)
    assert (queued[0].prompt_tokens, queued[0].cost) == (prompt, prompt * 2500)
    assert balance_nano(server, customer)[0] == CREDIT - sum(r.cost for r in rows)
    run(assert_ledger_ok(database_url))


def test_eight_concurrent_requests_complete_in_arrival_order(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    provider = provider_of(server, "smollm2-135m")
    finished: list[int] = []
    texts: dict[int, str] = {}
    lock = threading.Lock()

    def client(i):
        lines = seed_stream(server.url + "/api/chat-completions/", customer.key,
                            {"model": "smollm2-135m", "max_completion_tokens": 16,
                             "messages": [{"role": "user",
                                           "content": f"Tell me about the number {i}."}]})
        text, _, _ = parse_seed_stream(lines)
        with lock:
            finished.append(i)
            texts[i] = text

    threads = []
    for i in range(8):
        thread = threading.Thread(target=client, args=(i,))
        before = provider.waiting + (provider._queue.running is not None)
        thread.start()
        threads.append(thread)
        # the next client arrives only once this one is in the model's queue (or running),
        # so arrival order is 0..7 for sure
        wait_until(lambda i=i, before=before: provider.waiting
                   + (provider._queue.running is not None) > before or i in finished,
                   f"request {i} to arrive")
    for thread in threads:
        thread.join(timeout=120)
    assert finished == list(range(8))
    assert all(texts[i].strip() for i in range(8))
    run(assert_ledger_ok(database_url))


def test_full_queue_is_a_503_and_costs_nothing(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    provider = provider_of(server, "smollm2-one-slot")
    long = {"model": "smollm2-one-slot", "max_completion_tokens": 1000, "temperature": 0,
            "messages": [{"role": "user", "content": LONG_PROMPT}]}
    first = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                          json=long, stream=True)
    wait_until(lambda: provider._queue.running is not None, "the first request to run")
    second = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                           json=long, stream=True)
    wait_until(lambda: provider.waiting == 1, "the second request to wait")
    refused = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                            json=long)
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "model_busy" and error["type"] == "service_unavailable"
    assert "busy" in error["message"] and "retry" in error["message"]
    assert refused.headers.get("Retry-After") == "1"
    first.close()
    second.close()
    wait_until(lambda: provider._queue.running is None and provider.waiting == 0,
               "the model to be free")
    wait_until(lambda: balance_nano(server, customer) == (CREDIT, 0), "holds released")
    run(assert_ledger_ok(database_url))


@pytest.mark.parametrize("body, status, param", [
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
     400, "messages"),
    ({"messages": MESSAGES, "reasoning_effort": "low"}, 400, "reasoning_effort"),
    ({"messages": [{"role": "user", "content": "hello " * 3000}]}, 400, "messages"),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]},
     400, "tools"),
    ({"messages": MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18 C"}]}, 400, "messages["),
    ({"messages": MESSAGES, "functions": [{"name": "f"}]}, 400, "functions"),
    ({"messages": MESSAGES, "logprobs": True}, 400, "logprobs"),
    ({"messages": MESSAGES, "n": 2}, 400, "n"),
])
def test_refusals_are_clear_and_free(server, database_url, body, status, param):
    customer = run(make_customer(database_url, CREDIT))
    response = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                             json={"model": "smollm2-priced", **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert (error["param"] or "").startswith(param)
    wait_until(lambda: balance_nano(server, customer) == (CREDIT, 0), "holds released")
    run(assert_ledger_ok(database_url))


def test_responses_api_is_refused_for_a_local_model(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    response = requests.post(server.url + "/v1/responses", headers=customer.headers,
                             json={"model": "smollm2-priced", "input": "hi"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("model", "unsupported_parameter")
    assert "chat completions only" in error["message"]
    assert balance_nano(server, customer) == (CREDIT, 0)
    run(assert_ledger_ok(database_url))
