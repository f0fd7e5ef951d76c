"""The official openai Node SDK (npm `openai`, installed in tests/chat/node by `npm ci`):
runTools() through a three-turn tool loop, streamed and not, each turn charged exactly;
finalChatCompletion() on a stream whose upstream leaves out the first delta's role."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from tests.conftest import assert_ledger_ok, make_customer, run

NODE_DIR = Path(__file__).parent / "node"
MINI_IN, MINI_OUT = 150, 600  # gpt-4o-mini, nanodollars per token



@pytest.fixture(autouse=True)
def node_sdk():
    """Skipped on a developer's machine without node or the SDK; in CI (scripts/test runs
    `npm ci` there) a missing SDK is a failure, not a silent skip."""
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "openai").is_dir():
        missing = "needs node and the openai npm package (cd tests/chat/node && npm ci)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)


def node(server, customer, mode: str) -> dict:
    env = {**os.environ, "BASE_URL": server.url + "/v1", "API_KEY": customer.key}
    done = subprocess.run(["node", "tool_loop.mjs", mode], cwd=NODE_DIR, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def spent(server, customer, credit) -> int:
    balance = requests.get(server.url + "/api/balance/", headers=customer.headers).json()
    return credit - int(Decimal(balance["balance"]) * 10**9)


@pytest.mark.parametrize("mode", ["runTools", "runToolsStream"])
def test_run_tools_loop_is_charged_exactly(server, database_url, upstream, mode):
    credit = 10**9
    customer = run(make_customer(database_url, credit))
    out = node(server, customer, mode)
    assert out["content"] == "Alaska is the largest U.S."
    assert [name for name, _ in out["calls"]] == ["get_weather", "get_time"]
    assert out["finish"] == ["tool_calls", "tool_calls", "stop"]
    assert out["messages"] == 6  # user, (assistant call, tool result) x 2, assistant
    last = upstream.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "tool", "assistant", "tool"]
    assert [u["completion_tokens"] for u in out["usages"]] == [4, 4, 5]
    cost = sum(u["prompt_tokens"] * MINI_IN + u["completion_tokens"] * MINI_OUT
               for u in out["usages"])
    assert spent(server, customer, credit) == cost
    run(assert_ledger_ok(database_url))


def test_final_chat_completion_without_upstream_role(server, database_url):
    credit = 10**9
    customer = run(make_customer(database_url, credit))
    out = node(server, customer, "streamNoRole")
    assert out["role"] == "assistant" and out["content"] == "Alaska is the largest U.S."
    usage = out["usages"][0]
    assert spent(server, customer, credit) == \
        usage["prompt_tokens"] * MINI_IN + usage["completion_tokens"] * MINI_OUT
    run(assert_ledger_ok(database_url))
