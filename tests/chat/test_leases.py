"""Chat served from credit leases (ledger/leases.py) by real server processes, on SQLite and
on PostgreSQL: two servers on one account charge every request exactly, and a server killed with -9 has
its lease returned by a surviving server's sweeper."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests
import sqlalchemy as sa

from minitoolai.app import create_app
from minitoolai.db.engine import sync_url
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import ThreadedServer, free_port, run_cli, start_serve_process

URL = "/api/chat-completions/"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def leased_env(database_url, tmp_path, upstream):
    return {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
            "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "MINITOOLAI_DEMO_ACCOUNT": "false",
            "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LEASES__SIZE": "0.01",
            "MINITOOLAI_LEASES__TTL_SECONDS": "2", "MINITOOLAI_LEASES__TICK_SECONDS": "0.2",
            "MINITOOLAI_SWEEP_INTERVAL_SECONDS": "0.5",
            "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
            "OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-upstream"}


def nano(text: str) -> int:
    return int(Decimal(text) * 10**9)


def scalars(database_url: str, sql: str) -> tuple:
    engine = sa.create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(sql)).one())
    finally:
        engine.dispose()


def usage_costs(database_url: str) -> tuple[int, int]:
    return scalars(database_url, "SELECT count(*), coalesce(sum(cost), 0) FROM usage")


def test_two_servers_on_one_account_charge_exactly(leased_env, database_url):
    customer = run(make_customer(database_url, 10**9))
    ports = [free_port(), free_port()]
    servers = [start_serve_process(leased_env, port) for port in ports]
    try:
        def call(i: int) -> requests.Response:
            return requests.post(f"http://127.0.0.1:{ports[i % 2]}{URL}",
                                 headers=customer.headers, json=BODY, timeout=30)

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(40)))
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
        count, cost = usage_costs(database_url)
        assert count == 40 and cost > 0
        # served from a lease of each server's, not from hold rows
        assert scalars(database_url, "SELECT count(DISTINCT owner) FROM credit_leases") == (2,)
        # what the customer sees is exact at once, the leases' charges not yet folded
        balance = requests.get(f"http://127.0.0.1:{ports[0]}/api/balance/",
                               headers=customer.headers).json()
        assert nano(balance["balance"]) == 10**9 - cost
        run(assert_ledger_ok(database_url))
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(30)
    # a clean stop gives every lease back
    balance = run_cli(leased_env, "balance", customer.email)
    held = next(line for line in balance.stdout.splitlines() if line.startswith("held"))
    assert held.split("$")[1].strip() in ("0", "0.00"), balance.stdout
    run(assert_ledger_ok(database_url))


def test_kill_9_lease_returned_by_the_sweeper(leased_env, database_url):
    customer = run(make_customer(database_url, 10**9))
    port, other = free_port(), free_port()
    victim = start_serve_process(leased_env, port)
    survivor = None
    base = f"http://127.0.0.1:{port}"
    try:
        done = requests.post(base + URL, headers=customer.headers, json=BODY, timeout=30)
        assert done.status_code == 200
        charged = usage_costs(database_url)[1]
        stream = requests.post(base + URL, headers=customer.headers, stream=True, json={
            "model": "gpt-4o-mini", "max_completion_tokens": 500,
            "messages": [{"role": "user", "content": "[slow] [chunks:200]"}]})
        assert next(stream.iter_lines()).startswith(b"data: ")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    # the dead server's lease still holds credit (read through the CLI: no server is up),
    # and the ledger is sound at this instant
    shown = run_cli(leased_env, "balance", customer.email).stdout
    held = next(line for line in shown.splitlines() if line.startswith("held"))
    assert held.split("$")[1].strip() not in ("0", "0.00")
    assert run_cli(leased_env, "ledger", "verify").returncode == 0
    # another server's sweeper returns the lease once it expires (database clock): the
    # served request stays charged, the killed stream's request costs nothing
    survivor = start_serve_process(leased_env, other)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            balance = requests.get(f"http://127.0.0.1:{other}/api/balance/",
                                   headers=customer.headers).json()
            if balance["held"] == "0":
                break
            time.sleep(0.2)
        assert balance["held"] == "0"
        assert nano(balance["balance"]) == 10**9 - charged
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(30)
    assert charged > 0
    run(assert_ledger_ok(database_url))


def test_refusals_keep_their_envelope_with_leases(chat_settings, database_url):
    """402 for an account or a key limit that cannot cover the hold, as without leases."""
    settings = chat_settings(leases={"size": "1"})
    poor = run(make_customer(database_url, 1_000))
    limited = run(make_customer(database_url, 10**9, spend_limit=1_000))
    with ThreadedServer(create_app(settings)) as live:
        refused = requests.post(live.url + URL, headers=poor.headers, json=BODY)
        assert refused.status_code == 402, refused.text
        assert refused.json()["error"]["message"].startswith(
            "insufficient credit: available balance $0.000001 (balance $0.000001, held $0.00)")
        limit = requests.post(live.url + URL, headers=limited.headers, json=BODY)
        assert limit.status_code == 402, limit.text
        assert limit.json()["error"]["code"] == "key_spend_limit"
    run(assert_ledger_ok(database_url))
