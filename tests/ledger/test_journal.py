"""The settlement journal: a settlement the database refuses is journaled (fsync'd), retried
until it lands, adopted and replayed by the next process if its own dies, charged late if
its hold was swept meanwhile, and never charged twice."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import insert, select

from minitoolai.accounts.store import get_account
from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries, usage
from minitoolai.ledger.holds import UsageRecord, reserve, settle
from minitoolai.ledger.journal import PendingSettlement, SettlementJournal, read_pending
from minitoolai.ledger.keeper import HoldKeeper
from minitoolai.ledger.sweeper import sweep_expired
from minitoolai.ledger.verify import verify
from tests.conftest import make_customer
from tests.fakes.outage import DatabaseOutage

CREDIT = 10_000


def record(status: str = "ok") -> UsageRecord:
    return UsageRecord(endpoint="/v1/chat/completions", model="gpt-4o-mini",
                       prompt_tokens=12, completion_tokens=34, status=status, latency_ms=5)


def entry(request_id: str, account_id: int, cost: int) -> PendingSettlement:
    return PendingSettlement(request_id, account_id, cost, record())


async def charges_of(db: Database, account_id: int) -> list[tuple[str, int, str]]:
    async with db.read() as conn:
        rows = (await conn.execute(
            select(ledger_entries.c.request_id, ledger_entries.c.amount, ledger_entries.c.note)
            .where(ledger_entries.c.account_id == account_id,
                   ledger_entries.c.kind == "charge")
            .order_by(ledger_entries.c.request_id))).all()
    return [tuple(row) for row in rows]


async def usage_of(db: Database, request_id: str):
    async with db.read() as conn:
        return (await conn.execute(select(usage).where(usage.c.request_id == request_id))
                ).one()


# ---- the file ---------------------------------------------------------------------------------

def test_records_resolves_and_skips_a_torn_line(tmp_path):
    journal = SettlementJournal(tmp_path)
    assert journal.path is None and not list(tmp_path.iterdir())  # nothing until a failure
    journal.record([entry("a", 1, 5), entry("b", 1, 7)])
    journal.resolve("a")
    assert [e.request_id for e in read_pending(journal.path)] == ["b"]
    with open(journal.path, "ab") as handle:  # a write cut short by a crash
        handle.write(b'{"settle": {"request_id": "c", "acc')
    assert [(e.request_id, e.cost, e.record) for e in read_pending(journal.path)] == \
        [("b", 7, record())]
    journal.resolve("b")  # nothing left: the file starts afresh
    assert journal.path.read_bytes() == b""
    journal.close()
    assert not list(tmp_path.iterdir())


def test_a_live_process_file_is_left_alone_a_dead_one_adopted(tmp_path):
    """The owner's flock says whether it lives; kill -9 drops it with the process."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from minitoolai.ledger.holds import UsageRecord
        from minitoolai.ledger.journal import PendingSettlement, SettlementJournal
        journal = SettlementJournal({str(tmp_path)!r})
        journal.record([PendingSettlement("dead-1", 3, 900, UsageRecord("e", "m"))])
        print("journaled", flush=True)
        if sys.argv[1] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        sys.stdin.read()  # alive until the test closes stdin
    """)
    live = subprocess.Popen([sys.executable, "-c", script, "live"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout.readline().strip() == "journaled"
        adopter = SettlementJournal(tmp_path)
        assert adopter.adopt() == []  # its owner is alive
        dead = subprocess.run([sys.executable, "-c", script, "die"], capture_output=True,
                              text=True, timeout=60, check=False)
        assert dead.returncode == -9 and dead.stdout.strip() == "journaled"
        adopted = adopter.adopt()
        assert [(e.request_id, e.account_id, e.cost) for e in adopted] == \
            [("dead-1", 3, 900)]
        # the dead file is gone, its entry is in the adopter's own (fsync'd) file
        files = sorted(p.name for p in tmp_path.iterdir())
        assert len(files) == 2 and adopter.path.name in files
        assert [e.request_id for e in read_pending(adopter.path)] == ["dead-1"]
    finally:
        live.stdin.close()
        live.wait(30)
    adopter.close()


# ---- against the database ---------------------------------------------------------------------

@pytest.fixture
def short_busy_timeout(monkeypatch):
    """SQLite: writes blocked by the outage's lock fail after 0.2 s, not 10 s."""
    monkeypatch.setattr("minitoolai.db.sqlite_ledger.SQLITE_BUSY_TIMEOUT_MS", 200)


async def test_refused_settlement_is_journaled_and_retried_once(database_url, tmp_path,
                                                                short_busy_timeout):
    customer = await make_customer(database_url, CREDIT)
    account = customer.account_id
    direct = Database(database_url, pool_size=2)
    with DatabaseOutage(database_url) as outage:
        db = Database(outage.url, pool_size=2)
        keeper = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path))
        try:
            for rid in ("r1", "r2"):
                await reserve(db, request_id=rid, account_id=account,
                              key_id=customer.key_id, amount=1_000, kind="chat",
                              ttl_seconds=60)
                keeper.track(rid)
            assert await keeper.settle("r1", 600, record(), account_id=account) == 600
            outage.begin()
            assert await keeper.settle("r2", 700, record(), account_id=account) is None
            # journaled: the hold stays live (renewed, not swept), verify says so
            assert set(keeper.pending) == {"r2"} and keeper.live == 1
            assert [e.request_id for e in read_pending(keeper.journal.path)] == ["r2"]
            problems = await verify(direct, tmp_path)
            assert len(problems) == 1 and "1 settlement(s) of $0.0000007 not yet in" \
                in problems[0], problems
            assert await keeper.retry_pending() == 1  # still down: still pending
            outage.end()
            assert await keeper.retry_pending() == 0
            assert keeper.pending == {} and keeper.live == 0
            assert read_pending(keeper.journal.path) == []
            # a replay of the same settlement (a lost `done` line) charges nothing more
            keeper.pending["r2"] = entry("r2", account, 700)
            assert await keeper.retry_pending() == 0
        finally:
            keeper.close_journal()
            await db.dispose()
    try:
        assert (await get_account(direct, account)).balance == CREDIT - 1_300
        assert [(rid, amount) for rid, amount, _ in await charges_of(direct, account)] == \
            [("r1", -600), ("r2", -700)]
        assert (await usage_of(direct, "r2")).cost == 700
        assert await verify(direct, tmp_path) == []
    finally:
        await direct.dispose()


async def test_swept_hold_is_charged_late_exactly_once(db, database_url, tmp_path):
    """The rule when a journaled settlement's hold expired and was released (its process
    died in the outage): the charge is posted late, against the balance."""
    customer = await make_customer(database_url, CREDIT)
    account = customer.account_id
    await reserve(db, request_id="served", account_id=account, key_id=customer.key_id,
                  amount=1_000, kind="chat", ttl_seconds=-1)  # expired already
    dead = SettlementJournal(tmp_path)
    dead.record([entry("served", account, 640)])
    dead._file.close()  # the process died: its file stays, its lock goes
    assert await sweep_expired(db) == 1  # another process's sweeper releases the hold
    assert (await usage_of(db, "served")).status == "expired"

    keeper = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path))
    assert await keeper.open_journal() == 1
    assert await keeper.retry_pending() == 0
    row = await usage_of(db, "served")
    assert (row.cost, row.status, row.prompt_tokens, row.completion_tokens) == \
        (640, "ok", 12, 34)
    assert await charges_of(db, account) == \
        [("served", -640, "late charge: /v1/chat/completions gpt-4o-mini")]
    assert (await get_account(db, account)).balance == CREDIT - 640
    # the same entry replayed again (say, adopted twice after a crash): not charged twice
    keeper.pending["served"] = entry("served", account, 640)
    assert await keeper.retry_pending() == 0
    assert len(await charges_of(db, account)) == 1
    keeper.close_journal()
    assert await verify(db, tmp_path) == []


async def test_a_late_charge_may_overdraw_and_verify_reports_it(db, database_url, tmp_path):
    customer = await make_customer(database_url, 1_000)
    account = customer.account_id
    await reserve(db, request_id="late", account_id=account, key_id=None, amount=1_000,
                  kind="chat", ttl_seconds=-1)
    keeper = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path))
    keeper.pending["late"] = entry("late", account, 600)
    assert await sweep_expired(db) == 1
    # meanwhile the released credit is spent
    await reserve(db, request_id="other", account_id=account, key_id=None, amount=1_000,
                  kind="chat", ttl_seconds=60)
    assert await settle(db, "other", 1_000, record(), account_id=account) == 1_000
    assert await keeper.retry_pending() == 0
    assert (await get_account(db, account)).balance == -600
    problems = await verify(db)
    assert len(problems) == 1 and "negative available balance -0.0000006" in problems[0]


async def test_own_sweeper_skips_journaled_holds(db, database_url, tmp_path):
    customer = await make_customer(database_url, CREDIT)
    await reserve(db, request_id="pending", account_id=customer.account_id, key_id=None,
                  amount=1_000, kind="chat", ttl_seconds=-1)
    keeper = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path))
    keeper.pending["pending"] = entry("pending", customer.account_id, 500)
    assert await sweep_expired(db, keep=keeper.pending) == 0
    assert await keeper.retry_pending() == 0  # the hold is there: an ordinary settlement
    assert (await get_account(db, customer.account_id)).balance == CREDIT - 500
    assert await charges_of(db, customer.account_id) == \
        [("pending", -500, "/v1/chat/completions gpt-4o-mini")]
    assert await verify(db) == []


async def test_a_release_is_not_journaled_but_retried(database_url, tmp_path,
                                                     short_busy_timeout, monkeypatch):
    """Nothing to charge: no fsync for it, but retried in the background until the
    database takes it (left to the sweeper, the held credit would refuse the customer's
    next requests until the hold expired)."""
    monkeypatch.setattr("minitoolai.ledger.undo.RETRY_FIRST", 0.05)
    customer = await make_customer(database_url, CREDIT)
    direct = Database(database_url, pool_size=2)
    with DatabaseOutage(database_url) as outage:
        db = Database(outage.url, pool_size=2)
        keeper = HoldKeeper(db, ttl_seconds=60, journal=SettlementJournal(tmp_path))
        try:
            await reserve(db, request_id="failed", account_id=customer.account_id,
                          key_id=None, amount=1_000, kind="chat", ttl_seconds=60)
            outage.begin()
            assert await keeper.settle("failed", 0, record("error"),
                                       account_id=customer.account_id) is None
            assert keeper.pending == {} and keeper.journal.path is None
            assert keeper.undoer.pending == 1
            outage.end()
            while keeper.undoer.pending:  # the next try lands
                await asyncio.sleep(0.02)
            account = await get_account(direct, customer.account_id)
            assert (account.balance, account.held) == (CREDIT, 0)
            assert (await usage_of(direct, "failed")).status == "error"
            assert await verify(direct, tmp_path) == []
        finally:
            await keeper.undoer.stop()
            await db.dispose()
            await direct.dispose()


async def test_verify_reports_usage_without_its_charge(db, database_url):
    """A usage record with a cost and no charge entry: served, shown, never charged."""
    customer = await make_customer(database_url, CREDIT)
    async with db.write() as conn:
        await conn.execute(insert(usage).values(
            request_id="shown-not-charged", account_id=customer.account_id, key_id=None,
            created_at=utcnow(), endpoint="/v1/chat/completions", model="gpt-4o-mini",
            cost=5, status="ok"))
    assert await verify(db) == ["usage shown-not-charged: cost 5 has no charge in the ledger"]
