"""What the gateway sends upstream: usage always asked for, temperature only where the
model accepts it, reasoning_effort defaults per family."""

from __future__ import annotations

import pytest
import requests

from tests.conftest import make_customer, run


def post(server, customer, **body):
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                         json=body)


@pytest.mark.parametrize("model,effort,sent_effort,temperature_sent", [
    ("gpt-4o", None, None, True),
    ("gpt-5-mini", None, "minimal", False),
    ("gpt-5", "high", "high", False),
    ("gpt-5.1", None, "none", True),
    ("gpt-5.2", "medium", "medium", False),
    ("gpt-5.4-mini", "none", "none", True),
    # the codex models go to the upstream's Responses API: tests/chat/test_codex_bridge.py
])
def test_forwarding(server, database_url, upstream, model, effort, sent_effort,
                    temperature_sent):
    customer = run(make_customer(database_url, 10**9))
    body = {"model": model, "temperature": 0.3}
    if effort:
        body["reasoning_effort"] = effort
    response = post(server, customer, **body)
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent.get("reasoning_effort") == sent_effort
    assert ("temperature" in sent) is temperature_sent
    assert sent["max_completion_tokens"] == 1000
