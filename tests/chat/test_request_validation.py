"""OpenAI's request schema at the edge: malformed tool messages and parameters are 400s that
name the field, before anything is reserved; and the hold's bound with tools, n and no
max-tokens field, asserted to the nanodollar (credit one short of the hold is a 402)."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest
import requests

from minitoolai.app import create_app
from tests.chat.test_errors import check, untouched
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens
from tests.servers import ThreadedServer

URL = "/v1/chat/completions"
USER = {"role": "user", "content": "hi"}
CALL = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
ASSISTANT = {"role": "assistant", "content": None, "tool_calls": [CALL]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def with_call(**fields):
    return {**ASSISTANT, "tool_calls": [{**CALL, **fields}]}


MALFORMED = [
    ([{"role": ["user"], "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": [{"type": {"text": 1}}]}], "messages[0].content[0].type"),
    ([USER, ASSISTANT, {"role": "tool", "content": "18 C"}], "messages[2].tool_call_id"),
    ([USER, ASSISTANT, {"role": "tool", "tool_call_id": 1, "content": "x"}],
     "messages[2].tool_call_id"),
    ([USER, ASSISTANT, {"role": "tool", "tool_call_id": "c1", "content": None}],
     "messages[2].content"),
    ([USER, ASSISTANT, {"role": "tool", "tool_call_id": "c1", "content": [
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
     "messages[2].content[0]"),
    ([USER, {"role": "assistant", "content": None}], "messages[1].content"),
    ([USER, {"role": "assistant", "content": None, "tool_calls": {"id": "c1"}}],
     "messages[1].tool_calls"),
    ([USER, with_call(id=None)], "messages[1].tool_calls[0].id"),
    ([USER, with_call(type="retrieval")], "messages[1].tool_calls[0].type"),
    ([USER, with_call(function={"name": "f", "arguments": {"city": "Paris"}})],
     "messages[1].tool_calls[0].function.arguments"),
    ([USER, with_call(function={"arguments": "{}"})], "messages[1].tool_calls[0].function.name"),
    ([USER, {"role": "assistant", "content": "x", "refusal": 3}], "messages[1].refusal"),
    ([USER, {"role": "function", "content": "18 C"}], "messages[1].name"),
    ([{"role": "user", "content": [{"type": "input_audio",
                                    "input_audio": {"data": "AA==", "format": "ogg"}}]}],
     "messages[0].content[0].input_audio.format"),
    ([{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf"}}]}],
     "messages[0].content[0].file"),
    ([{"role": "system", "content": [{"type": "refusal", "refusal": "no"}]}],
     "messages[0].content[0]"),
]


@pytest.mark.parametrize("messages,param", MALFORMED, ids=[p for _, p in MALFORMED])
def test_malformed_messages_are_400(server, database_url, messages, param):
    customer = run(make_customer(database_url, 10**9))
    check(requests.post(server.url + URL, headers=customer.headers,
                        json={"model": "gpt-4o", "messages": messages}), 400, param=param)
    untouched(database_url, customer, 10**9)


BAD_PARAMS = [
    ({"tools": {"type": "function"}}, "tools"),
    ({"tools": [{"type": "plugin"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{}"}}]},
     "tools[0].function.parameters"),
    ({"tool_choice": "auto"}, "tool_choice"),  # without tools
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {}}},
     "tool_choice.function.name"),
    ({"tools": [TOOL], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
    ({"functions": []}, "functions"),
    ({"functions": [{"name": "f"}], "function_call": "always"}, "function_call"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),  # without logprobs: true
    ({"n": 129}, "n"),
    ({"service_tier": "gold"}, "service_tier"),
    ({"prediction": {"type": "diff", "content": "x"}}, "prediction.type"),
    ({"modalities": ["text", "video"]}, "modalities[1]"),
    ({"audio": {"voice": "alloy"}}, "audio.format"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"user": 5}, "user"),
    ({"metadata": {"k": 1}}, "metadata.k"),
    ({"store": "no"}, "store"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"frequency_penalty": "high"}, "frequency_penalty"),
    ({"presence_penalty": 3}, "presence_penalty"),
    ({"logit_bias": {"50256": "ban"}}, "logit_bias.50256"),
    ({"web_search_options": {"search_context_size": "huge"}},
     "web_search_options.search_context_size"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),  # not streamed
    ({"stream": True, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage"),
]


@pytest.mark.parametrize("fields,param", BAD_PARAMS, ids=[p for _, p in BAD_PARAMS])
def test_malformed_parameters_are_400(server, database_url, fields, param):
    customer = run(make_customer(database_url, 10**9))
    error = check(requests.post(server.url + URL, headers=customer.headers,
                                json={"model": "gpt-4o", "messages": [USER], **fields}),
                  400, param=param)
    assert error["type"] == "invalid_request_error" and param.split("[")[0] in error["message"]
    untouched(database_url, customer, 10**9)


def test_seed_route_refuses_stream_options_without_stream(server, database_url):
    customer = run(make_customer(database_url, 10**9))
    check(requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                        json={"model": "gpt-4o", "messages": [USER], "stream": False,
                              "stream_options": {"include_usage": True}}),
          400, param="stream_options")


# ---- the hold's bound ------------------------------------------------------------------------
MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token
BASE, PER_MESSAGE, TOOLS_BASE, PER_TOOL = 16, 8, 32, 16  # chat/pricing.py, settings default


def hold_of(messages, extra, output_tokens, tool_calls=0, tools=0):
    prompt = (sum(len(orjson.dumps(m)) for m in messages) + BASE
              + PER_MESSAGE * (len(messages) + tool_calls)
              + (len(orjson.dumps(extra)) if extra else 0)
              + (TOOLS_BASE + PER_TOOL * tools if tools else 0))
    return prompt * MINI_IN + output_tokens * MINI_OUT


def post_with_credit(server, database_url, credit, body):
    customer = run(make_customer(database_url, credit))
    return customer, requests.post(server.url + URL, headers=customer.headers, json=body)


def test_hold_with_n_2_and_tools_is_exact(server, upstream, database_url):
    """Tool definitions, tool calls and results count in the prompt bound; n choices
    multiply the output bound; the charge is the upstream's usage of both choices."""
    tools = [TOOL, {"type": "function", "function": {"name": "g", "description": "x" * 500}}]
    messages = [USER, ASSISTANT, {"role": "tool", "tool_call_id": "c1", "content": "18 C"}]
    body = {"model": "gpt-4o-mini", "messages": messages, "tools": tools, "n": 2,
            "max_completion_tokens": 50}
    hold = hold_of(messages, {"tools": tools}, 2 * 50, tool_calls=1, tools=2)
    _, short = post_with_credit(server, database_url, hold - 1, body)
    check(short, 402, code="insufficient_credit")
    customer, response = post_with_credit(server, database_url, hold, body)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert len(completion["choices"]) == 2 and upstream.requests[-1]["n"] == 2
    prompt = count_prompt_tokens(messages, tools)
    assert completion["usage"]["prompt_tokens"] == prompt
    assert completion["usage"]["completion_tokens"] == 2 * 5
    charged = prompt * MINI_IN + 10 * MINI_OUT
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    assert Decimal(balance["balance"]) * 10**9 == hold - charged
    run(assert_ledger_ok(database_url))


def test_v1_without_max_tokens_holds_the_model_maximum_and_sends_no_cap(server, upstream,
                                                                         database_url):
    body = {"model": "gpt-4o-mini", "messages": [USER]}
    hold = hold_of([USER], {}, 16_384)
    _, short = post_with_credit(server, database_url, hold - 1, body)
    check(short, 402, code="insufficient_credit")
    _, response = post_with_credit(server, database_url, hold, body)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert "max_completion_tokens" not in sent and "max_tokens" not in sent
    run(assert_ledger_ok(database_url))


def test_max_output_tokens_is_configurable_per_model(chat_settings, database_url):
    settings = chat_settings(chat={"models": [{"id": "gpt-4o-mini", "max_output_tokens": 100}]})
    body = {"model": "gpt-4o-mini", "messages": [USER]}
    hold = hold_of([USER], {}, 100)
    with ThreadedServer(create_app(settings)) as live:
        _, short = post_with_credit(live, database_url, hold - 1, body)
        check(short, 402, code="insufficient_credit")
        _, response = post_with_credit(live, database_url, hold, body)
        assert response.status_code == 200, response.text
    run(assert_ledger_ok(database_url))


def test_prediction_adds_its_bytes_to_the_output_bound(server, database_url):
    """Rejected prediction tokens are billed as output, beyond max_completion_tokens."""
    prediction = {"type": "content", "content": "def f():\n    return 1\n" * 20}
    body = {"model": "gpt-4o-mini", "messages": [USER], "prediction": prediction,
            "max_completion_tokens": 30}
    hold = hold_of([USER], {"prediction": prediction}, 30 + len(orjson.dumps(prediction)))
    _, short = post_with_credit(server, database_url, hold - 1, body)
    check(short, 402, code="insufficient_credit")
    _, response = post_with_credit(server, database_url, hold, body)
    assert response.status_code == 200, response.text
    run(assert_ledger_ok(database_url))


@pytest.mark.parametrize("endpoint,body", [
    (URL, {"model": "gpt-4o", "messages": [USER]}),
    ("/v1/responses", {"model": "gpt-4o", "input": "hi"}),
], ids=["chat", "responses"])
def test_a_service_tier_billed_above_the_catalog_price_is_refused(server, upstream,
                                                                  database_url, endpoint,
                                                                  body):
    """priority (or scale) costs the operator more upstream than the one catalog price
    the customer pays: refused unless chat.service_tiers offers it; flex is forwarded."""
    customer = run(make_customer(database_url, 10**9))
    for tier in ("priority", "scale", "fast"):
        error = check(requests.post(server.url + endpoint, headers=customer.headers,
                                    json={**body, "service_tier": tier}),
                      400, param="service_tier", code="unsupported_parameter")
        assert "auto, default, flex" in error["message"]
    untouched(database_url, customer, 10**9)
    answer = requests.post(server.url + endpoint, headers=customer.headers,
                           json={**body, "service_tier": "flex"})
    assert answer.status_code == 200, answer.text
    assert upstream.requests[-1]["service_tier"] == "flex"


def test_an_operator_may_offer_the_priority_tier(chat_settings, upstream, database_url):
    settings = chat_settings(chat={"service_tiers": ["default", "priority"]})
    customer = run(make_customer(database_url, 10**9))
    with ThreadedServer(create_app(settings)) as live:
        answer = requests.post(live.url + URL, headers=customer.headers, json={
            "model": "gpt-4o", "messages": [USER], "service_tier": "priority"})
        assert answer.status_code == 200, answer.text
        assert upstream.requests[-1]["service_tier"] == "priority"
        check(requests.post(live.url + URL, headers=customer.headers, json={
            "model": "gpt-4o", "messages": [USER], "service_tier": "flex"}),
              400, param="service_tier")


def test_an_integer_past_64_bits_is_out_of_range_not_a_float(server, database_url):
    # orjson reads JSON integers past 64 bits as floats: the error still says what is wrong
    customer = run(make_customer(database_url, 10**9))
    error = check(requests.post(server.url + URL, headers=customer.headers, data=(
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],'
        b' "seed": 99999999999999999999999}')), 400, param="seed")
    assert "must be between" in error["message"] and "1e+23" in error["message"]
    untouched(database_url, customer, 10**9)
