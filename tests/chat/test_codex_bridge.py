"""Responses-only models (the seed's codex ones) on chat completions: the gateway translates
the chat request to the upstream's Responses API and its events back to the seed's chunks,
charged exactly from the response's usage (reasoning tokens included)."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest
import requests

from minitoolai.app import create_app
from minitoolai.catalog import default_chat_models
from tests.chat.test_errors import check
from tests.chat.test_seed_clients import SEED_MESSAGES, assert_seed_sequence
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_responses import count_input_tokens
from tests.fakes.responses_only import ARGUMENT_TOKENS, FakeResponsesOnly
from tests.servers import ThreadedServer

CREDIT = 10**9
REASONING = 64
MINI_IN, MINI_OUT = 250, 2_000  # gpt-5.1-codex-mini, nanodollars per token ($0.25 / $2.00)
CODEX_IN, CODEX_OUT = 1_750, 14_000  # gpt-5.3-codex ($1.75 / $14.00)
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


@pytest.fixture(scope="module")
def codex_upstream():
    with FakeResponsesOnly(api_key="sk-upstream", reasoning_tokens=REASONING) as fake:
        yield fake


@pytest.fixture
def server(make_settings, codex_upstream):
    providers = {"openai": {"base_url": codex_upstream.base_url, "api_key": "sk-upstream",
                            "read_timeout": 2}}
    settings = make_settings(chat={"providers": providers, "builtin_local_model": False})
    with ThreadedServer(create_app(settings)) as live:
        yield live


def balance(server, customer) -> tuple[int, int]:
    body = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return int(Decimal(body["balance"]) * 10**9), int(Decimal(body["held"]) * 10**9)


def test_codex_models_are_flagged_responses_only():
    models = default_chat_models()
    assert models["gpt-5.3-codex"].api == models["gpt-5.1-codex-mini"].api == "responses"
    assert models["gpt-4o-mini"].api == models["gpt-5.1"].api == "chat"


def test_fake_answers_404_on_chat_completions(codex_upstream):
    response = requests.post(codex_upstream.base_url + "/chat/completions",
                             headers={"Authorization": "Bearer sk-upstream"},
                             json={"model": "gpt-5.1-codex-mini", "messages": SEED_MESSAGES})
    assert response.status_code == 404


def test_seed_python_example_on_codex_streams_and_charges_exactly(server, codex_upstream,
                                                                   database_url):
    customer = run(make_customer(database_url, CREDIT))
    chat_before = codex_upstream.chat_requests
    # the seed's Python example, unchanged but for the URL, the key and the model
    API_Url = server.url + "/api/chat-completions/"
    API_Key = customer.key
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {API_Key}"
    }
    data = {
        "model": "gpt-5.1-codex-mini",
        "messages": SEED_MESSAGES,
        "temperature": 1.0,
        "max_completion_tokens": 1000
    }
    response = requests.post(API_Url, headers=headers, json=data, stream=True)
    lines = []
    for line in response.iter_lines():
        if line:
            decode_line = line.decode('utf-8')
            lines.append(decode_line)

    usage = assert_seed_sequence(lines)
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all(e["id"] == "chatcmpl-" + events[0]["id"][9:] for e in events)
    assert events[0]["model"].startswith("gpt-5.1-codex-mini")
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "Alaska is the largest U.S."
    # the request as the Responses API takes it
    sent = codex_upstream.requests[-1]
    assert codex_upstream.chat_requests == chat_before
    assert sent["model"] == "gpt-5.1-codex-mini" and sent["stream"] is True
    assert sent["input"] == [
        {"role": "developer", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "How can I help you today?"},
        {"role": "user", "content": "What's the largest U.S. state by area?"}]
    assert sent["max_output_tokens"] == 1000
    assert "temperature" not in sent  # the codex models refuse it (catalog policy)
    # nor is the seed's default effort ("none") sent: OpenAI refuses it for the codex
    # models (400 unsupported_value); their own default applies
    assert "reasoning" not in sent
    assert "messages" not in sent
    prompt = count_input_tokens(sent)
    completion = 5 + REASONING
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    assert usage["completion_tokens_details"]["reasoning_tokens"] == REASONING
    cost = prompt * MINI_IN + completion * MINI_OUT
    assert usage["cost"] == cost / 1e9
    assert balance(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


def test_sdk_whole_completion_on_codex_is_charged_exactly(server, codex_upstream,
                                                          database_url):
    customer = run(make_customer(database_url, CREDIT))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    try:
        completion = client.chat.completions.create(
            model="gpt-5.3-codex", reasoning_effort="high", max_completion_tokens=500,
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Largest state?"}])
    finally:
        client.close()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Alaska is the largest U.S."
    assert completion.choices[0].finish_reason == "stop"
    sent = codex_upstream.requests[-1]
    assert sent["reasoning"] == {"effort": "high"} and sent["max_output_tokens"] == 500
    assert not sent.get("stream")
    assert sent["input"][0] == {"role": "developer", "content": "Be brief."}
    prompt = count_input_tokens(sent)
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, 5 + REASONING)
    assert usage.completion_tokens_details.reasoning_tokens == REASONING
    cost = prompt * CODEX_IN + (5 + REASONING) * CODEX_OUT
    assert usage.model_extra["cost"] == cost / 1e9
    assert balance(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


@pytest.mark.parametrize("stream", [False, True])
def test_two_turn_tool_call_through_the_bridge(server, codex_upstream, database_url, stream):
    customer = run(make_customer(database_url, CREDIT))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    costs = []
    try:
        for turn in range(2):
            kwargs = {"model": "gpt-5.1-codex-mini", "messages": messages, "tools": TOOLS}
            if stream:
                with client.beta.chat.completions.stream(
                        **kwargs, stream_options={"include_usage": True}) as events:
                    for _ in events:
                        pass
                    completion = events.get_final_completion()
            else:
                completion = client.chat.completions.create(**kwargs)
            sent = codex_upstream.requests[-1]
            assert sent["tools"] == [{"type": "function", **TOOLS[0]["function"]}]
            produced = (ARGUMENT_TOKENS if turn == 0 else 5) + REASONING
            assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
                (count_input_tokens(sent), produced)
            costs.append(count_input_tokens(sent) * MINI_IN + produced * MINI_OUT)
            message = completion.choices[0].message
            if turn == 0:
                assert completion.choices[0].finish_reason == "tool_calls"
                call = message.tool_calls[0]
                assert call.function.name == "get_weather"
                assert json.loads(call.function.arguments) == {"city": "Paris"}
                messages += [message.model_dump(exclude_none=True),
                             {"role": "tool", "tool_call_id": call.id, "content": "Sunny"}]
            else:
                assert sent["input"][1:] == [
                    {"type": "function_call", "call_id": call.id, "name": "get_weather",
                     "arguments": '{"city": "Paris"}'},
                    {"type": "function_call_output", "call_id": call.id, "output": "Sunny"}]
                assert completion.choices[0].finish_reason == "stop"
                assert message.content == "Alaska is the largest U.S."
    finally:
        client.close()
    assert balance(server, customer) == (CREDIT - sum(costs), 0)
    run(assert_ledger_ok(database_url))


def test_image_parts_and_response_format_are_translated(server, codex_upstream,
                                                        database_url):
    customer = run(make_customer(database_url, CREDIT))
    image = {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}
    response = requests.post(server.url + "/v1/chat/completions", headers=customer.headers,
                             json={"model": "gpt-5.1-codex-mini", "max_completion_tokens": 50,
                                   "response_format": {"type": "json_object"},
                                   "messages": [{"role": "user", "content": [
                                       {"type": "text", "text": "What is this?"},
                                       {"type": "image_url", "image_url": image}]}]})
    assert response.status_code == 200, response.text
    sent = codex_upstream.requests[-1]
    assert sent["input"] == [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": image["url"], "detail": "low"}]}]
    assert sent["text"] == {"format": {"type": "json_object"}}
    usage = response.json()["usage"]
    cost = count_input_tokens(sent) * MINI_IN + (5 + REASONING) * MINI_OUT
    assert usage["prompt_tokens"] == count_input_tokens(sent)
    assert balance(server, customer) == (CREDIT - cost, 0)
    run(assert_ledger_ok(database_url))


def test_several_choices_are_refused_and_nothing_is_charged(server, codex_upstream,
                                                           database_url):
    customer = run(make_customer(database_url, CREDIT))
    before = len(codex_upstream.requests)
    response = requests.post(server.url + "/v1/chat/completions", headers=customer.headers,
                             json={"model": "gpt-5.3-codex", "n": 2, "max_completion_tokens": 100,
                                   "messages": [{"role": "user", "content": "Hi"}]})
    check(response, 400, code="unsupported_parameter", param="n")
    assert len(codex_upstream.requests) == before
    assert balance(server, customer) == (CREDIT, 0)
    run(assert_ledger_ok(database_url))


def test_api_is_configurable_per_model(make_settings):
    from minitoolai.catalog import build_catalog

    catalog = build_catalog(make_settings(chat={"models": [
        {"id": "gpt-5.3-codex", "api": "chat"},
        {"id": "gpt-4o-mini", "api": "responses"},
        {"id": "my-model", "input_price": "1", "output_price": "2"}]}))
    assert catalog.get("gpt-5.3-codex").api == "chat"
    assert catalog.get("gpt-4o-mini").api == "responses"
    assert catalog.get("my-model").api == "chat"
    assert catalog.get("gpt-5.1-codex-mini").api == "responses"
