"""The official openai SDK against /v1: streamed, not streamed, with an image part."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest
import requests

from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


@pytest.fixture
def client_and_customer(server, database_url):
    customer = run(make_customer(database_url, 1_000_000_000))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    yield client, customer
    client.close()


def test_non_streamed(client_and_customer, database_url):
    client, _ = client_and_customer
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello there"}])
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Alaska is the largest U.S."
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 5
    run(assert_ledger_ok(database_url))


def test_streamed_with_usage(client_and_customer, database_url):
    client, _ = client_and_customer
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Hello"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Alaska is the largest U.S."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    run(assert_ledger_ok(database_url))


def test_streamed_without_usage_drops_the_usage_chunk(client_and_customer, database_url,
                                                      server):
    client, customer = client_and_customer
    chunks = list(client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Hello"}], stream=True))
    assert all(c.choices for c in chunks)  # no usage chunk asked for, none sent
    assert chunks[-1].choices[0].finish_reason == "stop"
    # ...but the request was still billed, exactly, from the upstream's usage
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    prompt = count_prompt_tokens([{"role": "user", "content": "Hello"}])
    assert Decimal(balance["balance"]) * 10**9 == 1_000_000_000 - (prompt * 2000 + 5 * 8000)
    run(assert_ledger_ok(database_url))


def test_image_part(client_and_customer, database_url, upstream):
    client, _ = client_and_customer
    completion = client.chat.completions.create(
        model="gpt-4o", max_completion_tokens=300, temperature=0.7,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What's in this image?"},
            {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}}]}])
    assert completion.choices[0].message.content
    sent = upstream.requests[-1]
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == PIXEL
    assert sent["temperature"] == 0.7 and sent["max_completion_tokens"] == 300
    run(assert_ledger_ok(database_url))


def test_models_list(client_and_customer):
    client, _ = client_and_customer
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "gpt-5", "gpt-5.1-codex-mini"} <= ids


def test_models_retrieve_and_trailing_slashes(client_and_customer, server):
    client, customer = client_and_customer
    assert client.models.retrieve("gpt-4o").id == "gpt-4o"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-9")
    for path in ("/v1/models/", "/v1/models"):
        assert requests.get(server.url + path, headers=customer.headers).status_code == 200
    response = requests.post(server.url + "/v1/chat/completions/", headers=customer.headers,
                             json={"model": "gpt-4o", "messages": [{"role": "user",
                                                                    "content": "hi"}]})
    assert response.status_code == 200 and response.json()["object"] == "chat.completion"


def test_sdk_sees_errors_as_typed_exceptions(client_and_customer, server):
    client, _ = client_and_customer
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert info.value.body["code"] == "model_not_found"
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="mtai-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    bad.close()
