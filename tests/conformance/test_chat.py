"""/v1/chat/completions (whole, streamed chunk by chunk, with tool calls), /v1/responses
(whole and every streamed event) and /v1/models, as raw JSON, against OpenAI's schemas."""

from __future__ import annotations

import time

import orjson
import pytest
import requests

from tests.conformance.schemas import assert_conforms, member_for, problems
from tests.conftest import make_customer, run

HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = [{"type": "function", "function": {
    "name": "weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}}}}]


@pytest.fixture
def customer(database_url):
    return run(make_customer(database_url, 10**9))


def sse_events(response) -> list:
    """The JSON of every `data:` line of a server-sent event stream, up to [DONE]."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data == b"[DONE]":
                return events
            events.append(orjson.loads(data))
    return events


def post(server, customer, path, body, **kwargs):
    return requests.post(server.url + path, headers=customer.headers, json=body, timeout=30,
                         **kwargs)


@pytest.mark.parametrize("extra", [{}, {"tools": WEATHER, "tool_choice": "auto"}],
                         ids=["text", "tool_call"])
def test_whole_completion(server, customer, extra):
    response = post(server, customer, "/v1/chat/completions",
                    {"model": "gpt-4o-mini", "messages": HELLO, **extra})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    if extra:
        assert body["choices"][0]["message"]["tool_calls"], body
    assert_conforms("CreateChatCompletionResponse", body)


@pytest.mark.parametrize("extra", [{}, {"stream_options": {"include_usage": True}},
                                   {"tools": WEATHER, "stream_options": {"include_usage": True}}],
                         ids=["plain", "usage", "tool_call"])
def test_streamed_chunks(server, customer, extra):
    chunks = sse_events(post(server, customer, "/v1/chat/completions",
                             {"model": "gpt-4o-mini", "messages": HELLO, "stream": True,
                              **extra}, stream=True))
    assert len(chunks) >= 3
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)
    if "stream_options" in extra:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    for chunk in chunks:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)


def test_whole_response(server, customer):
    response = post(server, customer, "/v1/responses",
                    {"model": "gpt-4o-mini", "instructions": "Be brief.",
                     "input": "Largest state?", "max_output_tokens": 50})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "response" and body["usage"]["output_tokens"] == 5
    assert_conforms("Response", body)


def streamed_response_events(server, customer) -> list:
    events = sse_events(post(server, customer, "/v1/responses",
                             {"model": "gpt-4o-mini", "input": "Largest state?",
                              "stream": True}, stream=True))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    return events


def usage_pending(event: dict) -> bool:
    return "response" in event and event["response"].get("usage", 0) is None


def test_streamed_response_events(server, customer):
    events = streamed_response_events(server, customer)
    checked = [event for event in events if not usage_pending(event)]
    assert len(checked) >= len(events) - 2  # all but response.created / in_progress
    for event in checked:
        assert_conforms(member_for("ResponseStreamEvent", event), event)
        assert_conforms("ResponseStreamEvent", event)
    assert_conforms("Response", events[-1]["response"])


@pytest.mark.xfail(strict=True, reason="OpenAI's own response.created/in_progress events carry "
                   "\"usage\": null (relayed verbatim), which its schema's Response.usage "
                   "(ResponseUsage, not nullable) does not allow")
def test_streamed_response_events_before_usage(server, customer):
    events = [e for e in streamed_response_events(server, customer) if usage_pending(e)]
    assert events
    for event in events:
        assert_conforms(member_for("ResponseStreamEvent", event), event)


def test_models_list_and_retrieve(server, customer):
    response = requests.get(server.url + "/v1/models", headers=customer.headers, timeout=30)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert_conforms("ListModelsResponse", listing)
    assert len(listing["data"]) > 3
    # a model's `created` is the same in every answer (it once was the time of the answer,
    # and a retrieval a second later differed from the listing)
    time.sleep(1.05 - time.time() % 1)
    for model in listing["data"]:
        one = requests.get(server.url + "/v1/models/" + model["id"], headers=customer.headers,
                           timeout=30)
        assert one.status_code == 200, one.text
        assert one.json() == model
        assert_conforms("Model", one.json())


def test_validator_is_not_blind():
    """The schemas do refuse what OpenAI's clients would not parse."""
    assert problems("Model", {"id": "x", "object": "model", "created": "yesterday",
                              "owned_by": "me"})
    assert problems("CreateChatCompletionStreamResponse",
                    {"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                     "choices": []})
    assert problems("ErrorResponse", {"error": {"message": "m", "type": "t"}})


def test_chat_stream_cut_short_ends_with_an_error_envelope(server, customer):
    """An upstream that drops the stream: the chunks before, then the in-band error event."""
    chunks = sse_events(post(server, customer, "/v1/chat/completions",
                             {"model": "gpt-4o-mini", "stream": True,
                              "messages": [{"role": "user", "content": "[cut] [chunks:10]"}]},
                             stream=True))
    *delivered, last = chunks
    assert delivered and last["error"]["code"] == "upstream_failed", chunks
    assert_conforms("ErrorResponse", last)
    for chunk in delivered:
        assert_conforms("CreateChatCompletionStreamResponse", chunk)


def cut_responses_stream(server, customer) -> list:
    return sse_events(post(server, customer, "/v1/responses",
                           {"model": "gpt-4o-mini", "input": "x [cut] [chunks:8]",
                            "stream": True, "max_output_tokens": 100}, stream=True))


def test_responses_stream_cut_short_events_before_the_error(server, customer):
    *delivered, last = cut_responses_stream(server, customer)
    assert delivered[-1]["type"] == "response.output_text.delta"
    for event in delivered:
        if not usage_pending(event):  # see the xfail above
            assert_conforms(member_for("ResponseStreamEvent", event), event)
    assert last["type"] == "error" and last["code"] == "upstream_failed"


def test_responses_stream_cut_short_ends_with_a_response_error_event(server, customer):
    last = cut_responses_stream(server, customer)[-1]
    assert_conforms(member_for("ResponseStreamEvent", last), last)
