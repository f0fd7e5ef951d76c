"""LangChain's ChatOpenAI as a client: bind_tools and a three-turn ToolMessage loop (two tool
calls, then the answer), invoked and streamed, each turn charged exactly what the upstream
reported."""

from __future__ import annotations

from decimal import Decimal

import pytest
import requests

from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens

langchain_openai = pytest.importorskip("langchain_openai")
messages_module = pytest.importorskip("langchain_core.messages")
tools_module = pytest.importorskip("langchain_core.tools")
HumanMessage = messages_module.HumanMessage
ToolMessage = messages_module.ToolMessage

MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token


@tools_module.tool
def get_weather(city: str) -> str:
    """The weather in a city now."""
    return f"18 C and clear in {city}"


def balance_nano(server, customer) -> int:
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return int(Decimal(balance["balance"]) * 10**9)


@pytest.mark.parametrize("stream", [False, True], ids=["invoke", "stream"])
def test_tool_message_loop(server, upstream, database_url, stream):
    customer = run(make_customer(database_url, 10**9))
    llm = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=server.url + "/v1",
                                      api_key=customer.key, max_retries=0, stream_usage=True)
    agent = llm.bind_tools([get_weather])

    def ask(history):
        if not stream:
            return agent.invoke(history)
        message = None
        for chunk in agent.stream(history):
            message = chunk if message is None else message + chunk
        return message

    # [rounds:2]: the fake upstream calls the tool in the first two assistant turns
    history = [HumanMessage("What is the weather in Paris? [rounds:2]")]
    for number in (1, 2, 3):
        before = balance_nano(server, customer)
        answer = ask(history)
        sent = upstream.requests[-1]
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        usage = answer.usage_metadata
        assert usage["input_tokens"] == count_prompt_tokens(sent["messages"], sent["tools"])
        assert balance_nano(server, customer) == \
            before - usage["input_tokens"] * MINI_IN - usage["output_tokens"] * MINI_OUT
        if number < 3:
            (call,) = answer.tool_calls
            assert call["name"] == "get_weather" and call["args"]["city"] == "Paris"
            history += [answer, ToolMessage(get_weather.invoke(call["args"]),
                                            tool_call_id=call["id"])]
        else:
            assert answer.content == "Alaska is the largest U.S." and not answer.tool_calls
            # the last turn carried both tool calls and their results, as LangChain wrote them
            assert [m["role"] for m in sent["messages"]] == \
                ["user", "assistant", "tool", "assistant", "tool"]
            assert sent["messages"][2]["content"] == sent["messages"][4]["content"] == \
                "18 C and clear in Paris"
    run(assert_ledger_ok(database_url))
