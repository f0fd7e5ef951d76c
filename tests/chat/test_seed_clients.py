"""The seeds' own client code, run against the live server: Python requests and curl."""

from __future__ import annotations

import json
import shutil
import subprocess
from decimal import Decimal

import pytest
import requests

from minitoolai.catalog import default_chat_models
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.fakes.openai_upstream import count_prompt_tokens

SEED_MESSAGES = [
    {"role": "developer", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "How can I help you today?"},
    {"role": "user", "content": "What's the largest U.S. state by area?"},
]


def seed_python_example(url: str, api_key: str) -> list[str]:
    """The seed's Python example, unchanged but for the URL and the key."""
    API_Url = url
    API_Key = api_key
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {API_Key}"
    }
    data = {
        "model": "gpt-4o-mini",  # gpt-4o, gpt-4.1, gpt-5.4-nano, ...
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
    return lines


def assert_seed_sequence(lines: list[str]) -> dict:
    """data: chunk events, one with finish_reason, a usage chunk with choices [], [DONE]."""
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    for event in events:
        assert event["object"] == "chat.completion.chunk"
        assert {"id", "created", "model", "system_fingerprint", "choices"} <= event.keys()
    content = events[:-1]
    assert content[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(e["choices"][0]["finish_reason"] is None for e in content[:-1])
    assert all(e["usage"] is None for e in content)
    usage_event = events[-1]
    assert usage_event["choices"] == []
    usage = usage_event["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert "prompt_tokens_details" in usage and "completion_tokens_details" in usage
    return usage


def test_seed_python_example_streams_and_charges_exactly(server, database_url):
    customer = run(make_customer(database_url, 1_000_000_000))
    lines = seed_python_example(server.url + "/api/chat-completions/", customer.key)
    usage = assert_seed_sequence(lines)
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in lines[:-2])
    assert text == "Alaska is the largest U.S."
    prompt = count_prompt_tokens(SEED_MESSAGES)
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, 5)
    price = default_chat_models()["gpt-4o-mini"]
    cost = prompt * price.input_nano + 5 * price.output_nano
    assert cost == prompt * 150 + 5 * 600
    assert usage["cost"] == cost / 1e9
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    assert Decimal(balance["balance"]) * 10**9 == 1_000_000_000 - cost
    assert Decimal(balance["held"]) == 0
    run(assert_ledger_ok(database_url))


def test_seed_path_without_trailing_slash(server, database_url):
    customer = run(make_customer(database_url, 1_000_000_000))
    lines = seed_python_example(server.url + "/api/chat-completions", customer.key)
    assert_seed_sequence(lines)
    run(assert_ledger_ok(database_url))


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_streams_the_seed_sequence(server, database_url):
    customer = run(make_customer(database_url, 1_000_000_000))
    body = json.dumps({"model": "gpt-4o-mini", "messages": SEED_MESSAGES,
                       "temperature": 1.0, "max_completion_tokens": 1000})
    out = subprocess.run(
        ["curl", "-sS", "-N", server.url + "/api/chat-completions/",
         "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {customer.key}", "-d", body],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert_seed_sequence([line for line in out.splitlines() if line])
    run(assert_ledger_ok(database_url))


def test_non_streamed_seed_request_returns_one_completion(server, database_url):
    customer = run(make_customer(database_url, 1_000_000_000))
    response = requests.post(server.url + "/api/chat-completions/", headers=customer.headers,
                             json={"model": "gpt-4.1-nano", "messages": SEED_MESSAGES,
                                   "stream": False})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Alaska is the largest U.S."
    prompt = count_prompt_tokens(SEED_MESSAGES)
    assert body["usage"]["cost"] == (prompt * 100 + 5 * 400) / 1e9
    run(assert_ledger_ok(database_url))


SEED_PHP = r'''<?php
$api_url = "@@API_URL@@";
$api_key = "@@API_KEY@@";
$data = [
"model" => "gpt-4o-mini", #gpt-4o, gpt-4.1, gpt-5.4-nano, ...
"messages" => [
["role" => "developer", "content" => "You are a helpful assistant."],
["role" => "user", "content" => "Hello"],
["role" => "assistant", "content" => "How can I help you today?"],
["role" => "user", "content" => "What's the largest U.S. state by area?"],
],
"temperature" => 1.0,
"max_completion_tokens" => 1000
];
// For reasoning models, use 'reasoning_effort' in the request data.
$headers = [
"Content-Type: application/json",
"Authorization: Bearer $api_key"
];
$ch = curl_init();
curl_setopt($ch, CURLOPT_URL, $api_url);
curl_setopt($ch, CURLOPT_POST, true);
curl_setopt($ch, CURLOPT_HTTPHEADER, $headers);
curl_setopt($ch, CURLOPT_RETURNTRANSFER, false);
curl_setopt($ch, CURLOPT_POSTFIELDS, json_encode($data));
// streamed
curl_setopt($ch, CURLOPT_WRITEFUNCTION, function($ch, $data) {
echo $data;
ob_flush();
flush();
return strlen($data);
});
$response = curl_exec($ch);
if (curl_errno($ch)) {
echo "cURL error: " . curl_error($ch);
}
curl_close($ch);
?>
'''


@pytest.mark.skipif(shutil.which("php") is None, reason="php (php-cli, php-curl) not installed")
def test_seed_php_example_streams_the_seed_sequence(server, database_url, tmp_path):
    customer = run(make_customer(database_url, 1_000_000_000))
    script = tmp_path / "seed.php"
    script.write_text(SEED_PHP.replace("@@API_URL@@", server.url + "/api/chat-completions/")
                      .replace("@@API_KEY@@", customer.key))
    out = subprocess.run(["php", str(script)], capture_output=True, text=True, timeout=60)
    assert "cURL error" not in out.stdout, out.stdout
    assert_seed_sequence([line for line in out.stdout.splitlines() if line])
    run(assert_ledger_ok(database_url))
