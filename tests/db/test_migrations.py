"""Migrations run forward on both databases, and carry data across: codes made before
they were hashed still redeem afterwards."""

from __future__ import annotations

import uuid

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from minitoolai.accounts.store import create_account
from minitoolai.dashboard.codes import redeem
from minitoolai.db.engine import Database
from minitoolai.db.migrate import alembic_config, upgrade
from tests.conftest import PG_ADMIN_DSN, _pg_reachable


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.sqlite3'}"
        return
    if _pg_reachable():
        pytest.skip(_pg_reachable())
    name = f"minitoolai_migr_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_plaintext_codes_survive_their_hashing(empty_database):
    cfg = alembic_config(empty_database)
    command.upgrade(cfg, "dashboard_0001")  # before codes were hashed
    command.upgrade(cfg, "0001_core")
    db = Database(empty_database, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO redemption_codes (code, amount, batch, created_at)"
                " VALUES ('OLDCODE234567ABC', 5000, 'old', CURRENT_TIMESTAMP)")
    finally:
        await db.dispose()
    upgrade(empty_database)  # every branch to its head
    db = Database(empty_database, pool_size=1)
    try:
        async with db.read() as conn:
            stored = (await conn.exec_driver_sql(
                "SELECT code, hint FROM redemption_codes")).one()
        assert stored.code != "OLDCODE234567ABC" and stored.hint == "7ABC"
        account = await create_account(db, "m@example.com")
        assert await redeem(db, account.id, "oldc-ode2-3456-7abc") == (5000, 5000)
    finally:
        await db.dispose()


async def test_open_holds_survive_the_lean_holds_table(empty_database):
    """0002_core rebuilds `holds` (WITHOUT ROWID on SQLite, no secondary indexes): a hold
    open across the upgrade still settles exactly once, and the downgrade keeps it too."""
    from datetime import timedelta

    from minitoolai.ledger.credits import add_credit
    from minitoolai.ledger.holds import UsageRecord, settle
    from minitoolai.ledger.verify import verify

    cfg = alembic_config(empty_database)
    command.upgrade(cfg, "0001_core")
    db = Database(empty_database, pool_size=1)
    try:
        account = await create_account(db, "h@example.com")
        await add_credit(db, account.id, 10_000)
        # the hold as the code of that revision wrote it (today's reserve needs the key
        # columns of later revisions)
        async with db.write() as conn:
            await conn.execute(sa.text("UPDATE accounts SET held = held + 4000"
                                       " WHERE id = :id"), {"id": account.id})
            await conn.execute(sa.text(
                "INSERT INTO holds (id, account_id, key_id, amount, kind, created_at,"
                " expires_at) VALUES ('before', :id, NULL, 4000, 'chat', :now, :later)"),
                {"id": account.id, "now": db.now(), "later": db.now() + timedelta(minutes=1)})
    finally:
        await db.dispose()
    upgrade(empty_database)
    command.downgrade(cfg, "0001_core")
    command.upgrade(cfg, "heads")
    db = Database(empty_database, pool_size=1)
    try:
        async with db.read() as conn:
            indexes = await conn.run_sync(lambda sync: sa.inspect(sync).get_indexes("holds"))
        assert indexes == []
        record = UsageRecord(endpoint="test", model="m")
        assert await settle(db, "before", 1_500, record, account_id=account.id) == 1_500
        assert await settle(db, "before", 1_500, record, account_id=account.id) is None
        assert await verify(db) == []
        async with db.read() as conn:
            balance, held = (await conn.execute(
                sa.text("SELECT balance, held FROM accounts WHERE id = :id"),
                {"id": account.id})).one()
        assert (balance, held) == (8_500, 0)
    finally:
        await db.dispose()


async def test_ledger_who_and_paid_are_filled_for_old_entries(empty_database):
    """ledger_0001 adds created_by and paid: a Stripe payment made before it counts as paid
    revenue by "stripe", a redeemed code as made by its customer, the rest stays free."""
    cfg = alembic_config(empty_database)
    command.upgrade(cfg, "0002_core")
    db = Database(empty_database, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO accounts (email, balance, held, created_at)"
                " VALUES ('old@example.com', 7, 0, CURRENT_TIMESTAMP)")
            for amount, kind, ref in ((1, "topup", "stripe:abc"), (2, "topup", "signup:1"),
                                      (3, "redeem", "code:9"), (1, "topup", None)):
                reference = f"'{ref}'" if ref else "NULL"
                await conn.exec_driver_sql(
                    "INSERT INTO ledger_entries (account_id, amount, kind, request_id, note,"
                    f" created_at) VALUES (1, {amount}, '{kind}', {reference}, '',"
                    " CURRENT_TIMESTAMP)")
    finally:
        await db.dispose()
    upgrade(empty_database)
    db = Database(empty_database, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.exec_driver_sql(
                "SELECT request_id, created_by, paid FROM ledger_entries ORDER BY id")).all()
    finally:
        await db.dispose()
    assert [(r[0], r[1], bool(r[2])) for r in rows] == [
        ("stripe:abc", "stripe", True), ("signup:1", "sign-up", False),
        ("code:9", "old@example.com", False), (None, None, False)]


async def test_keys_limits_count_this_months_usage_from_before_the_upgrade(empty_database):
    """keys_0001 adds expiry, monthly limits and allowlists: a key's spending this month
    (UTC) is filled from its usage rows, so a monthly limit set right after the upgrade
    counts what it already spent; last month's rows do not count. A downgrade removes the
    columns and the upgrade again refills them. The database's heads are the scripts'
    (the readiness check compares them)."""
    from datetime import UTC, datetime, timedelta

    from alembic.runtime.migration import MigrationContext

    from minitoolai.accounts.store import get_key
    from minitoolai.db.migrate import expected_heads
    from minitoolai.ledger.holds import month_of
    from minitoolai.ledger.verify import verify

    cfg = alembic_config(empty_database)
    for head in ("0002_core", "dashboard_0002", "ledger_0001"):
        command.upgrade(cfg, head)
    now = datetime.now(UTC)
    this_month = datetime(now.year, now.month, 1, tzinfo=UTC) + timedelta(minutes=1)
    last_month = datetime(now.year, now.month, 1, tzinfo=UTC) - timedelta(days=3)
    db = Database(empty_database, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.execute(sa.text(
                "INSERT INTO accounts (email, balance, held, created_at)"
                " VALUES ('k@example.com', 1000, 0, :t)"), {"t": last_month})
            await conn.execute(sa.text(
                "INSERT INTO api_keys (id, account_id, name, prefix, key_hash, created_at,"
                " spent, held) VALUES ('key_old', 1, 'old', 'mtai-x', 'h', :t, 0, 0)"),
                {"t": last_month})
            for n, (moment, cost) in enumerate(((last_month, 300), (this_month, 200),
                                                (this_month, 50))):
                await conn.execute(sa.text(
                    "INSERT INTO usage (request_id, account_id, key_id, created_at, endpoint,"
                    " model, cost, status) VALUES (:r, 1, 'key_old', :t, 'chat', 'm', :c,"
                    " 'ok')"), {"r": f"r{n}", "t": moment, "c": cost})
                await conn.execute(sa.text(
                    "INSERT INTO ledger_entries (account_id, amount, kind, request_id, note,"
                    " created_at) VALUES (1, :a, 'charge', :r, '', :t)"),
                    {"a": -cost, "r": f"r{n}", "t": moment})
            await conn.execute(sa.text(
                "INSERT INTO ledger_entries (account_id, amount, kind, note, created_at)"
                " VALUES (1, 1550, 'topup', '', :t)"), {"t": last_month})
            await conn.execute(sa.text("UPDATE api_keys SET spent = 550"))
    finally:
        await db.dispose()
    for _ in range(2):
        upgrade(empty_database)
        db = Database(empty_database, pool_size=1)
        try:
            key = await get_key(db, "key_old")
            assert (key.spent, key.spent_in(month_of(now)), key.month_limit) == (550, 250, None)
            async with db.read() as conn:  # what the readiness check compares
                heads = await conn.run_sync(
                    lambda sync: set(MigrationContext.configure(sync).get_current_heads()))
            assert heads == expected_heads()
            assert key.expires_at is None and key.models is None
            assert await verify(db) == []
        finally:
            await db.dispose()
        command.downgrade(cfg, "keys@-1")
        db = Database(empty_database, pool_size=1)
        try:
            async with db.read() as conn:
                columns = await conn.run_sync(
                    lambda sync: {c["name"] for c in sa.inspect(sync).get_columns("api_keys")})
            assert "month_spent" not in columns and "spent" in columns
        finally:
            await db.dispose()


async def test_password_resets_branch_up_down_up(empty_database):
    """dashboard_auth_0001 (its own branch) creates password_resets, goes down alone without
    touching the other branches' tables, and comes back; a link made after works."""
    from minitoolai.dashboard.resets import create_reset, find_reset

    cfg = alembic_config(empty_database)
    upgrade(empty_database)

    async def tables() -> set[str]:
        db = Database(empty_database, pool_size=1)
        try:
            async with db.read() as conn:
                return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
        finally:
            await db.dispose()

    assert "password_resets" in await tables()
    command.downgrade(cfg, "dashboard_auth@-1")
    left = await tables()
    assert "password_resets" not in left and "dashboard_sessions" in left
    command.upgrade(cfg, "heads")
    db = Database(empty_database, pool_size=1)
    try:
        account = await create_account(db, "r@example.com")
        token = await create_reset(db, account.id, 60)
        assert (await find_reset(db, token)).id == account.id
        async with db.read() as conn:
            stored = (await conn.exec_driver_sql("SELECT token_hash FROM password_resets")
                      ).scalar_one()
        assert stored != token and len(stored) == 64
    finally:
        await db.dispose()
