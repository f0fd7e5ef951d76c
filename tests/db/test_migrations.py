"""Migrations run forward on both databases, and carry data across: codes made before
they were hashed still redeem afterwards."""

from __future__ import annotations

import uuid

import psycopg
import pytest
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
