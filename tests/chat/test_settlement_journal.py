"""Nothing served goes uncharged: the database fails mid-load, streams that were served
during the outage show their cost (journaled settlements), and once the database is back
every served request is charged exactly once, including after a kill -9 of the server
during the outage and a restart that replays its journal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import requests
from sqlalchemy import select, update

from minitoolai.accounts.store import get_account
from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import holds, ledger_entries, usage
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer
from tests.fakes.outage import DatabaseOutage
from tests.servers import ThreadedServer, free_port, run_cli, start_serve_process

URL = "/api/chat-completions/"
CREDIT = 10**9
SLOW = "[slow] [chunks:20]"  # about a second of streaming


@dataclass
class Outcome:
    status: int
    cost: int | None  # nanodollars, from the usage chunk
    done: bool


def stream(base: str, key: str, started: threading.Semaphore | None = None) -> Outcome:
    """One streamed request read to its end; `started` is released at its first event."""
    try:
        response = requests.post(base + URL, headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "gpt-4o-mini", "max_completion_tokens": 100,
                                       "messages": [{"role": "user", "content": SLOW}]},
                                 stream=True, timeout=90)
    except requests.ConnectionError:
        return Outcome(0, None, False)
    cost, done = None, False
    try:
        for line in response.iter_lines():
            if started is not None:
                started.release()
                started = None
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: {"):
                event = json.loads(line[6:], parse_float=Decimal)
                if isinstance(event.get("usage"), dict) and "cost" in event["usage"]:
                    cost = int(event["usage"]["cost"] * 10**9)
    except requests.RequestException:
        pass  # cut short: not served
    finally:
        if started is not None:
            started.release()
    return Outcome(response.status_code, cost, done)


async def ledger_of(database_url: str, account_id: int) -> dict[str, tuple[int, str]]:
    """request id -> (charged, note) of the account's charge entries."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(
                select(ledger_entries.c.request_id, ledger_entries.c.amount,
                       ledger_entries.c.note)
                .where(ledger_entries.c.account_id == account_id,
                       ledger_entries.c.kind == "charge"))).all()
        return {row.request_id: (-row.amount, row.note) for row in rows}
    finally:
        await db.dispose()


async def usage_costs(database_url: str, account_id: int) -> dict[str, tuple[int, str]]:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(
                select(usage.c.request_id, usage.c.cost, usage.c.status)
                .where(usage.c.account_id == account_id))).all()
        return {row.request_id: (row.cost, row.status) for row in rows}
    finally:
        await db.dispose()


async def problems(database_url: str, journal_dir: Path) -> list[str]:
    db = Database(database_url, pool_size=1)
    try:
        return await verify(db, journal_dir)
    finally:
        await db.dispose()


async def wait_until_sound(database_url: str, journal_dir: Path, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while (found := await problems(database_url, journal_dir)) and \
            time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert found == [], found


async def assert_each_served_charged_once(database_url, account_id, outcomes) -> None:
    """The charges are exactly the served requests' costs, as their clients were shown
    them, one each (the chat stream carries no request id: compared as multisets)."""
    served = [o for o in outcomes if o.status == 200 and o.done and o.cost is not None]
    charges = await ledger_of(database_url, account_id)
    costs = await usage_costs(database_url, account_id)
    assert sorted(o.cost for o in served) == sorted(c for c, _ in charges.values())
    assert {rid: cost for rid, (cost, _) in costs.items() if cost} == \
        {rid: charged for rid, (charged, _) in charges.items()}
    assert await _account(database_url, account_id) == \
        (CREDIT - sum(o.cost for o in served), 0)


async def _account(database_url: str, account_id: int) -> tuple[int, int]:
    db = Database(database_url, pool_size=1)
    try:
        account = await get_account(db, account_id)
        return account.balance, account.held
    finally:
        await db.dispose()


async def test_outage_mid_load_every_served_stream_is_charged_once(
        chat_settings, database_url, tmp_path, monkeypatch):
    # SQLite: a write blocked by the outage's lock fails after 0.3 s instead of 10 s
    monkeypatch.setattr("minitoolai.db.sqlite_ledger.SQLITE_BUSY_TIMEOUT_MS", 300)
    customer = await make_customer(database_url, CREDIT)
    journal_dir = tmp_path / "data" / "settlements"
    in_flight, during = 16, 8
    with DatabaseOutage(database_url) as outage:
        settings = chat_settings(database_url=outage.url, rate_limit_per_minute=0)
        with ThreadedServer(create_app(settings)) as server, \
                ThreadPoolExecutor(in_flight + during) as pool:
            before = [stream(server.url, customer.key) for _ in range(3)]  # charged normally
            started = threading.Semaphore(0)
            streams = [pool.submit(stream, server.url, customer.key, started)
                       for _ in range(in_flight)]
            for _ in range(in_flight):  # every one has reserved and is streaming
                assert started.acquire(timeout=30)
            outage.begin()
            # requests that arrive during the outage cannot reserve: refused, never charged
            refused = [pool.submit(stream, server.url, customer.key) for _ in range(during)]
            outcomes = [f.result(timeout=90) for f in streams]
            late = [f.result(timeout=90) for f in refused]
            # served during the outage: cost shown, not in the database, in the journal
            assert all(o.status == 200 and o.done and o.cost for o in outcomes), outcomes
            pending = await problems(database_url, journal_dir)
            assert any("settlement journal" in line for line in pending), pending
            outage.end()
            await wait_until_sound(database_url, journal_dir)
    assert all(o.status != 200 or not o.done for o in late), late
    await assert_each_served_charged_once(database_url, customer.account_id,
                                          before + outcomes + late)
    assert len(await ledger_of(database_url, customer.account_id)) == 3 + in_flight


# ---- kill -9 during the outage ------------------------------------------------------------------

async def expire_holds(database_url: str, account_id: int) -> None:
    """Time passes for this account's holds: they expire (the sweeper may take them)."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.execute(update(holds).where(holds.c.account_id == account_id)
                               .values(expires_at=holds.c.created_at))
    finally:
        await db.dispose()


async def test_kill_9_during_the_outage_then_replay(database_url, tmp_path, upstream):
    """Streams served during an outage are journaled; the server is killed -9 before the
    database comes back; a restart adopts the journal and charges each exactly once: by an
    ordinary settlement where the hold survived (customer A), by a late charge where the
    hold expired and another process swept it meanwhile (customer B)."""
    a = await make_customer(database_url, CREDIT)
    b = await make_customer(database_url, CREDIT)
    data = tmp_path / "data"
    per_customer = 6
    with DatabaseOutage(database_url) as outage:
        env = {**os.environ, "MINITOOLAI_DATABASE_URL": outage.url,
               "MINITOOLAI_DATA_DIR": str(data), "MINITOOLAI_DEMO_ACCOUNT": "false",
               "MINITOOLAI_SWEEP_INTERVAL_SECONDS": "0.5",
               "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0",
               "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
               "OPENAI_BASE_URL": upstream.base_url, "OPENAI_API_KEY": "sk-upstream"}
        direct = {**env, "MINITOOLAI_DATABASE_URL": database_url}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_serve_process(env, port)
        try:
            started = threading.Semaphore(0)
            with ThreadPoolExecutor(2 * per_customer) as pool:
                futures = [pool.submit(stream, base, customer.key, started)
                           for customer in (a, b) for _ in range(per_customer)]
                for _ in futures:
                    assert started.acquire(timeout=30)
                outage.begin()
                # (SQLite: each settlement waits out the 10 s busy timeout, then journals)
                outcomes = [f.result(timeout=120) for f in futures]
            assert all(o.status == 200 and o.done and o.cost for o in outcomes), outcomes
            os.kill(server.pid, signal.SIGKILL)
            server.wait(10)
        finally:
            if server.poll() is None:
                server.kill()
        outage.end()
        # the dead server's settlements: shown to its clients, not in the database
        check = run_cli(direct, "ledger", "verify")
        assert check.returncode == 1, check.stdout + check.stderr
        assert f"{2 * per_customer} settlement(s)" in check.stderr, check.stderr
        assert await ledger_of(database_url, a.account_id) == {}
        # B's holds expire and another process sweeps them while the server is down
        await expire_holds(database_url, b.account_id)
        swept = run_cli(direct, "ledger", "sweep")
        assert f"released {per_customer} expired hold(s)" in swept.stdout, swept.stdout
        server = start_serve_process(env, port)
        try:
            await wait_until_sound(database_url, data / "settlements")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    for customer, part in ((a, outcomes[:per_customer]), (b, outcomes[per_customer:])):
        await assert_each_served_charged_once(database_url, customer.account_id, part)
    notes_a = {note for _, note in (await ledger_of(database_url, a.account_id)).values()}
    notes_b = {note for _, note in (await ledger_of(database_url, b.account_id)).values()}
    assert notes_a == {"/api/chat-completions gpt-4o-mini"}
    assert notes_b == {"late charge: /api/chat-completions gpt-4o-mini"}
    assert {status for _, status in (await usage_costs(database_url, b.account_id)).values()
            } == {"ok"}
    final = run_cli(direct, "ledger", "verify")
    assert final.returncode == 0, final.stdout + final.stderr
    assert not list((data / "settlements").glob("*.jsonl"))  # replayed, and cleaned up
