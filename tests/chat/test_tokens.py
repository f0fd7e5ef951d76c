"""The tokenizers behind estimates: which model gets which, and what is counted."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from minitoolai.chat.tokens import count_prompt, delivered_text, encoding_for, tokenizer


@pytest.mark.parametrize("model, encoding", [
    ("gpt-4o-mini", "o200k_base"), ("gpt-4.1-nano", "o200k_base"), ("gpt-5", "o200k_base"),
    ("gpt-5.1-codex-mini", "o200k_base"), ("openai/gpt-4o", "o200k_base"),
    ("o3-mini", "o200k_base"), ("gpt-4", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("meta-llama/Llama-3.1-70B-Instruct", None), ("smollm2-135m", None),
])
def test_each_model_gets_its_own_tokenizer(model, encoding):
    assert encoding_for(model) == encoding


def test_the_vocabularies_ship_with_the_package_and_load_offline():
    """Loaded in a process with no network at all (a new network namespace) when the
    machine allows it; otherwise in a plain one, where a download would still show up as
    the load failing or hanging past the timeout."""
    code = ("from minitoolai.chat.tokens import tokenizer;"
            "import sys;"
            "t = tokenizer('o200k_base');"
            "print(t.count('hello world'), tokenizer('cl100k_base').count('hello world'),"
            " 'bpe_openai' in sys.modules)")
    for command in (["unshare", "-rn", sys.executable, "-c", code], [sys.executable, "-c", code]):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                    check=False)
        except FileNotFoundError:
            continue
        if result.returncode == 0:
            break
    # o200k_base: "hello" 24912, " world" 2375; the package's Python side is not imported
    assert result.stdout.split() == ["2", "2", "False"], result.stderr


def test_the_prompt_is_counted_with_openais_chat_framing():
    counter = tokenizer("o200k_base")
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "name": "ann", "content": [
                    {"type": "text", "text": "0123456789" * 100},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    count = counter.count
    expected = (3  # reply priming
                + 3 + count("system") + count("Be brief.")
                + 3 + count("user") + count("ann") + 1 + 334  # 1000 digits: 333 x 3 + 1
                + 3 + count("assistant") + count(orjson.dumps(messages[2]["tool_calls"])
                                                 .decode())
                + count(orjson.dumps(tools).decode()))
    assert count_prompt(counter, messages, {"tools": tools, "seed": 1}) == expected


def test_delivered_text_is_every_delta_the_client_was_sent():
    def event(delta):
        return b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta}]}) + b"\n\n"

    sent = [event({"role": "assistant", "content": ""}) + event({"content": "Hel"}),
            event({"content": "lo"}),
            event({"tool_calls": [{"index": 0, "function": {"name": "f",
                                                            "arguments": "{\"a\""}}]}),
            event({"refusal": "no"}) + b'data: {"choices":[],"usage":null}\n\n',
            b"data: [DONE]\n\n"]
    assert delivered_text(sent) == ('Hellof{"a"no', 4)


def test_delivered_text_counts_the_responses_api_deltas():
    def event(obj):
        return b"event: x\ndata: " + orjson.dumps(obj) + b"\n\n"

    sent = [event({"type": "response.created", "response": {"id": "r"}}),
            event({"type": "response.output_text.delta", "delta": "Hel"}),
            event({"type": "response.output_text.delta", "delta": "lo"}),
            event({"type": "response.function_call_arguments.delta", "delta": "{}"}),
            event({"type": "response.output_text.done", "text": "Hello"})]
    assert delivered_text(sent) == ("Hello{}", 3)
