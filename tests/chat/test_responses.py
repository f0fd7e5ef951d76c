"""POST /v1/responses with the official openai SDK: relayed to the upstream's Responses API,
whole and streamed, charged exactly from its usage; what cannot be bounded is refused."""

from __future__ import annotations

import time
from dataclasses import replace
from decimal import Decimal

import openai
import orjson
import pytest
import requests

from minitoolai.catalog import default_chat_models
from minitoolai.chat import responses
from minitoolai.errors import InvalidRequest
from tests.chat.test_errors import check, untouched
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_responses import count_input_tokens

MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token
CREDIT = 10**9


@pytest.fixture
def sdk(server, database_url):
    customer = run(make_customer(database_url, CREDIT))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=customer.key, max_retries=0)
    yield client, customer
    client.close()


def balance_nano(server, customer) -> int:
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return int(Decimal(balance["balance"]) * 10**9)


def test_whole_response_is_relayed_and_charged(sdk, server, upstream, database_url):
    client, customer = sdk
    response = client.responses.create(model="gpt-4o-mini", instructions="Be brief.",
                                       input="What is the largest state?",
                                       max_output_tokens=50)
    assert response.output_text == "Alaska is the largest U.S."
    sent = upstream.requests[-1]
    assert sent["input"] == "What is the largest state?" and sent["max_output_tokens"] == 50
    tokens = count_input_tokens(sent)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (tokens, 5)
    assert balance_nano(server, customer) == CREDIT - tokens * MINI_IN - 5 * MINI_OUT
    run(assert_ledger_ok(database_url))


def test_streamed_response_is_relayed_and_charged(sdk, server, upstream, database_url):
    client, customer = sdk
    items = [{"role": "developer", "content": "Be brief."},
             {"role": "user", "content": [{"type": "input_text", "text": "Largest state?"}]}]
    events = list(client.responses.create(model="gpt-4o-mini", input=items, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Alaska is the largest U.S."
    usage = events[-1].response.usage
    assert "max_output_tokens" not in upstream.requests[-1]  # no cap was asked, none is sent
    assert usage.input_tokens == count_input_tokens(upstream.requests[-1])
    assert balance_nano(server, customer) == \
        CREDIT - usage.input_tokens * MINI_IN - usage.output_tokens * MINI_OUT
    run(assert_ledger_ok(database_url))


def test_hold_is_the_body_bytes_and_the_model_maximum(server, database_url):
    body = {"model": "gpt-4o-mini", "input": "hi"}
    hold = (len(orjson.dumps(body)) + 16 + 8) * MINI_IN + 16_384 * MINI_OUT
    customer = run(make_customer(database_url, hold - 1))
    check(requests.post(server.url + "/v1/responses", headers=customer.headers, json=body),
          402, code="insufficient_credit")
    customer = run(make_customer(database_url, hold))
    assert requests.post(server.url + "/v1/responses", headers=customer.headers,
                         json=body).status_code == 200
    run(assert_ledger_ok(database_url))


TOOL_CALL = {"type": "function_call", "call_id": "c1", "name": "look", "arguments": "{}"}
IMAGE = {"type": "input_image", "image_url": "https://example.com/a.png"}
FILE = {"type": "input_file", "file_url": "https://example.com/a.pdf"}


@pytest.mark.parametrize("items,bound", [
    # a tool's output may be an array of input parts: an image or a file there costs the
    # same tokens as in a message (priced by its bytes alone, the charge capped at the hold
    # would leave the rest unbilled)
    ([TOOL_CALL, {"type": "function_call_output", "call_id": "c1", "output": [IMAGE]}],
     default_chat_models()["gpt-4o-mini"].image_tokens_max),
    ([{"type": "custom_tool_call", "call_id": "c1", "name": "look", "input": "x"},
      {"type": "custom_tool_call_output", "call_id": "c1", "output": [FILE]}],
     default_chat_models()["gpt-4o-mini"].file_tokens_max),
    ([{"type": "computer_call_output", "call_id": "c1",
       "output": {"type": "computer_screenshot", "image_url": "https://example.com/s.png"}}],
     default_chat_models()["gpt-4o-mini"].image_tokens_max),
    ([{"role": "user", "content": [IMAGE]}, {"role": "user", "content": [FILE]}],
     default_chat_models()["gpt-4o-mini"].image_tokens_max
     + default_chat_models()["gpt-4o-mini"].file_tokens_max),
], ids=["function_call_output", "custom_tool_call_output", "computer_screenshot", "messages"])
def test_images_and_files_are_held_at_their_bound_wherever_they_are(server, database_url,
                                                                      items, bound):
    body = {"model": "gpt-4o-mini", "input": items, "max_output_tokens": 10}
    hold = (len(orjson.dumps(body)) + 16 + 8 * len(items) + bound) * MINI_IN + 10 * MINI_OUT
    customer = run(make_customer(database_url, hold - 1))
    check(requests.post(server.url + "/v1/responses", headers=customer.headers, json=body),
          402, code="insufficient_credit")
    untouched(database_url, customer, hold - 1)
    # and exactly the hold is enough: each part is counted once
    customer = run(make_customer(database_url, hold))
    answer = requests.post(server.url + "/v1/responses", headers=customer.headers, json=body)
    assert answer.status_code == 200, answer.text
    run(assert_ledger_ok(database_url))


def test_a_malformed_part_type_is_forwarded_not_a_500():
    items = [{"role": "user", "content": [{"type": ["input_image"], "image_url": "x"}]}]
    assert responses._input_shape(items, default_chat_models()["gpt-4o-mini"]) == (1, 0, 0)


def test_an_image_in_a_tool_output_is_refused_by_a_model_without_vision():
    model = replace(default_chat_models()["gpt-4o-mini"], vision=False)
    items = [TOOL_CALL, {"type": "function_call_output", "call_id": "c1",
                         "output": [{"type": "input_text", "text": "see"}, IMAGE]}]
    with pytest.raises(InvalidRequest) as info:
        responses._input_shape(items, model)
    assert (info.value.param, info.value.code) == ("input[1].output[1]",
                                                   "image_input_not_supported")


@pytest.mark.parametrize("fields,param", [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": None}, "input"),
    ({"max_output_tokens": "many"}, "max_output_tokens"),
    ({"model": "gpt-9"}, "model"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_refusals_are_400_and_free(server, database_url, fields, param):
    customer = run(make_customer(database_url, CREDIT))
    body = {"model": "gpt-4o-mini", "input": "hi", **fields}
    response = requests.post(server.url + "/v1/responses", headers=customer.headers,
                             json=body)
    check(response, 404 if param == "model" else 400, param=param)
    untouched(database_url, customer, CREDIT)


def test_upstream_failure_releases_the_hold(sdk, server, database_url):
    client, customer = sdk
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o-mini", input="x [fail:400]")
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="gpt-4o-mini", input="x [fail:500]")
    assert info.value.status_code == 502
    assert balance_nano(server, customer) == CREDIT
    run(assert_ledger_ok(database_url))


def test_stream_cut_short_is_charged_an_estimate_within_the_hold(sdk, server, database_url):
    client, customer = sdk
    events = list(client.responses.create(model="gpt-4o-mini", input="x [cut] [chunks:8]",
                                          stream=True, max_output_tokens=100))
    # the stream ends with the Responses API's own error event, as OpenAI ends one
    assert events[-1].type == "error" and events[-1].code == "upstream_failed"
    assert events[-1].sequence_number == events[-2].sequence_number + 1
    deadline = time.monotonic() + 10
    while balance_nano(server, customer) == CREDIT and time.monotonic() < deadline:
        time.sleep(0.05)  # the settlement of a broken stream runs after the client is gone
    spent = CREDIT - balance_nano(server, customer)
    assert 0 < spent <= 1000 * MINI_IN + 100 * MINI_OUT
    run(assert_ledger_ok(database_url))
