"""kill -9 of the server mid-stream: committed money stays, the sweeper frees the hold."""

from __future__ import annotations

import os
import signal
import time
from decimal import Decimal

import requests

from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import free_port, run_cli, start_serve_process

URL = "/api/chat-completions/"


def test_kill_9_mid_stream(database_url, tmp_path, upstream):
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
           "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "MINITOOLAI_DEMO_ACCOUNT": "false",
           "MINITOOLAI_HOLD_TTL_SECONDS": "3", "MINITOOLAI_SWEEP_INTERVAL_SECONDS": "0.5",
           "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
           "OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-upstream"}
    customer = run(make_customer(database_url, 10**9))
    port = free_port()
    server = start_serve_process(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        done = requests.post(base + URL, headers=customer.headers,
                             json={"model": "gpt-4o-mini",
                                   "messages": [{"role": "user", "content": "hi"}]})
        assert done.status_code == 200 and "[DONE]" in done.text
        balance = requests.get(base + "/api/balance/", headers=customer.headers).json()
        charged = 10**9 - int(Decimal(balance["balance"]) * 10**9)
        stream = requests.post(base + URL, headers=customer.headers, stream=True, json={
            "model": "gpt-4o-mini", "max_completion_tokens": 500,
            "messages": [{"role": "user", "content": "[slow] [chunks:200]"}]})
        lines = stream.iter_lines()
        assert next(lines).startswith(b"data: ")
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
    # the completed request's charge is committed; the open hold is still held, and the
    # ledger's invariants hold at this instant
    balance = run_cli(env, "balance", customer.email)
    assert balance.returncode == 0, balance.stderr
    held_line = [line for line in balance.stdout.splitlines() if line.startswith("held")][0]
    assert held_line.split("$")[1] != "0.00"
    assert run_cli(env, "ledger", "verify").returncode == 0
    # a restarted server's sweeper releases the dead process's hold once it expires
    time.sleep(3)
    server = start_serve_process(env, port)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            body = requests.get(base + "/api/balance/", headers=customer.headers).json()
            if body["held"] == "0":
                break
            time.sleep(0.2)
        assert body["held"] == "0"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(20)
    assert charged > 0
    run(assert_ledger_ok(database_url))
