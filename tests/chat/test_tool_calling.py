"""Function calling through the gateway with the official openai SDK: a three-turn tool loop
(streamed and not) and the legacy `functions`, each turn charged exactly from the fake
upstream's usage; what is forwarded is what the client sent."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest
import requests

from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import argument_fragments, count_prompt_tokens

MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token
CREDIT = 10**10  # a file part holds its 100-page bound: dollars on gpt-4o
TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}, "strict": False}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
]
RESULTS = {"get_weather": '{"celsius": 18, "sky": "clear"}', "get_time": "14:05"}


@pytest.fixture
def sdk(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    yield client, customer
    client.close()


def balance_nano(server, customer) -> int:
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return int(Decimal(balance["balance"]) * 10**9)


def turn(client, messages, stream):
    """One request of the loop: the whole completion, assembled by the SDK when streamed."""
    kwargs = {"model": "gpt-4o-mini", "messages": messages, "tools": TOOLS}
    if not stream:
        return client.chat.completions.create(**kwargs)
    with client.chat.completions.stream(stream_options={"include_usage": True},
                                        **kwargs) as events:
        return events.get_final_completion()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_three_turn_tool_loop_is_charged_exactly(sdk, server, upstream, database_url, stream):
    client, customer = sdk
    messages = [{"role": "system", "content": "Use the tools."},
                {"role": "user", "content": "Weather and time in Paris? [rounds:2]"}]
    called = []
    for number in (1, 2, 3):
        before = balance_nano(server, customer)
        completion = turn(client, messages, stream)
        sent = upstream.requests[-1]
        # forwarded as sent: every message (tool calls, null content, tool results), tools
        assert sent["messages"] == messages and sent["tools"] == TOOLS
        assert "max_completion_tokens" not in sent  # /v1 with no max: no hidden cap
        choice = completion.choices[0]
        prompt = count_prompt_tokens(messages, TOOLS)
        if number < 3:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            assert call.function.arguments == "".join(argument_fragments(number))
            called.append(call.function.name)
            completion_tokens = len(argument_fragments(number))
        else:
            assert choice.finish_reason == "stop"
            assert choice.message.content == "Alaska is the largest U.S."
            completion_tokens = 5
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == \
            (prompt, completion_tokens)
        cost = prompt * MINI_IN + completion_tokens * MINI_OUT
        assert balance_nano(server, customer) == before - cost
        if number < 3:
            # the loop as an application writes it: the assistant's message, then the result
            messages.append(choice.message.to_dict())
            messages.append({"role": "tool", "tool_call_id": call.id,
                             "content": RESULTS[call.function.name]})
    assert called == ["get_weather", "get_time"]
    assert messages[2]["content"] is None and messages[2]["tool_calls"][0]["type"] == "function"
    run(assert_ledger_ok(database_url))


def test_tool_choice_and_parallel_tool_calls_are_forwarded(sdk, upstream):
    client, _ = sdk
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "time?"}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False)
    assert completion.choices[0].message.tool_calls[0].function.name == "get_time"
    sent = upstream.requests[-1]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    assert sent["parallel_tool_calls"] is False


def test_legacy_functions_loop(sdk, server, upstream, database_url):
    client, customer = sdk
    functions = [TOOLS[0]["function"]]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    before = balance_nano(server, customer)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                           functions=functions, function_call="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.function_call.name == "get_weather"
    messages += [{"role": "assistant", "content": None,
                  "function_call": {"name": "get_weather",
                                    "arguments": choice.message.function_call.arguments}},
                 {"role": "function", "name": "get_weather", "content": RESULTS["get_weather"]}]
    second = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                            functions=functions)
    assert second.choices[0].finish_reason == "stop"
    assert upstream.requests[-1]["messages"] == messages
    assert upstream.requests[-1]["functions"] == functions
    spent = sum(c.usage.prompt_tokens * MINI_IN + c.usage.completion_tokens * MINI_OUT
                for c in (first, second))
    assert second.usage.prompt_tokens == count_prompt_tokens(messages, functions)
    assert balance_nano(server, customer) == before - spent
    run(assert_ledger_ok(database_url))


def test_every_part_and_field_is_forwarded_as_sent(sdk, upstream):
    """Roles and parts the seed does not show (developer, refusal, input_audio, file, named
    participants, an assistant's audio) and the sampling parameters reach the upstream."""
    client, _ = sdk
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "name": "ann", "content": [
            {"type": "text", "text": "Listen and read:"},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "file", "file": {"filename": "a.pdf",
                                      "file_data": "data:application/pdf;base64,JVBERi0="}}]},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}],
         "refusal": "No."},
        {"role": "user", "content": "Please?"},
    ]
    params = {"logprobs": True, "top_logprobs": 2, "n": 1, "service_tier": "flex",
              "seed": 7, "stop": ["\n\n"], "user": "u-1", "metadata": {"k": "v"},
              "store": False, "frequency_penalty": 0.5, "presence_penalty": -0.5,
              "logit_bias": {"50256": -100}, "response_format": {"type": "json_object"},
              "prediction": {"type": "content", "content": "Alaska"},
              "web_search_options": {"search_context_size": "low"}}
    completion = client.chat.completions.create(model="gpt-4o", messages=messages,
                                                max_tokens=20, **params)
    assert completion.choices[0].message.content
    sent = upstream.requests[-1]
    assert sent["messages"] == messages
    assert {k: sent[k] for k in params if k != "n"} == {k: v for k, v in params.items()
                                                        if k != "n"}
    assert "n" not in sent and sent["max_completion_tokens"] == 20
    # logprobs: false is a value like any other (LangChain sends it)
    client.chat.completions.create(model="gpt-4o", messages=messages[-1:], logprobs=False)
    assert upstream.requests[-1]["logprobs"] is False


def test_first_streamed_delta_gets_the_role(sdk, server):
    """An upstream that leaves `role` out of its first delta (llama.cpp's server does) still
    gives the client `"role": "assistant"` there: Node's finalChatCompletion() needs it."""
    _, customer = sdk
    response = requests.post(server.url + "/v1/chat/completions", headers=customer.headers,
                             json={"model": "gpt-4o-mini", "stream": True, "messages": [
                                 {"role": "user", "content": "hi [norole]"}]})
    events = [json.loads(line[6:]) for line in response.text.splitlines()
              if line.startswith("data: {")]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Alaska"}
    assert all("role" not in e["choices"][0]["delta"] for e in events[1:])
