"""Fixtures shared by every test: a real database (a SQLite file, and the PostgreSQL on
127.0.0.1:5432 when reachable), settings, a live server on loopback, funded accounts.

Every test that uses `database_url` runs once per database backend. PostgreSQL gets one
database per test, cloned from a template migrated once per run, and dropped after, so
runs never see each other's rows. Set MTAI_TEST_DATABASES=sqlite to skip PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

import psycopg
import pytest

from minitoolai.accounts.store import create_account, create_key
from minitoolai.config import Settings, load_settings
from minitoolai.config import merge_dicts as merge_config
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.ledger.credits import add_credit
from minitoolai.ledger.verify import verify

# Test-harness variables must not carry the MINITOOLAI_ prefix: servers started by the
# tests would refuse them as unknown configuration keys. The old names are still accepted.
_LEGACY = {k: os.environ.pop(k) for k in ("MINITOOLAI_TEST_PG", "MINITOOLAI_TEST_DATABASES")
           if k in os.environ}
PG_ADMIN_DSN = os.environ.get("MTAI_TEST_PG", _LEGACY.get("MINITOOLAI_TEST_PG",
                              "postgresql://postgres@127.0.0.1:5432/postgres"))
BACKENDS = [b.strip() for b in os.environ.get(
    "MTAI_TEST_DATABASES", _LEGACY.get("MINITOOLAI_TEST_DATABASES", "sqlite,postgresql"))
    .split(",") if b.strip()]
_RUN_ID = uuid.uuid4().hex[:8]
_pg_state: dict = {}


def _pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    if "reason" not in _pg_state:
        try:
            with psycopg.connect(PG_ADMIN_DSN, connect_timeout=3):
                _pg_state["reason"] = None
        except psycopg.Error as exc:
            _pg_state["reason"] = f"PostgreSQL at {PG_ADMIN_DSN} not reachable: {exc}".strip()
    return _pg_state["reason"]


def _pg_url(name: str) -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0] + "/" + name


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


def _pg_template() -> str:
    """A database migrated once per run, cloned by each test."""
    if "template" not in _pg_state:
        name = f"minitoolai_test_{_RUN_ID}_tmpl"
        _pg_admin(f'CREATE DATABASE "{name}"')
        upgrade(_pg_url(name))
        _pg_state["template"] = name
    return _pg_state["template"]


def pytest_sessionfinish(session, exitstatus):
    template = _pg_state.get("template")
    if template:
        try:
            _pg_admin(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        except psycopg.Error:
            pass


def pytest_terminal_summary(terminalreporter):
    if "postgresql" not in BACKENDS:
        terminalreporter.write_line("PostgreSQL tests SKIPPED: MTAI_TEST_DATABASES excludes"
                                    " postgresql", yellow=True)
    elif _pg_state.get("reason"):
        terminalreporter.write_line(f"PostgreSQL tests SKIPPED: {_pg_state['reason']}",
                                    yellow=True)
    elif "template" in _pg_state:
        terminalreporter.write_line("PostgreSQL tests ran against " + PG_ADMIN_DSN, green=True)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh, migrated database for this test; every backend in turn."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'minitoolai.sqlite3'}"
        upgrade(url)
        yield url
        return
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    name = f"minitoolai_test_{_RUN_ID}_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{_pg_template()}"')
    try:
        yield _pg_url(name)
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def make_settings(database_url, tmp_path):
    """Settings for this test: its own data dir and database, no real upstream, no demo, and
    no built-in local model unless the test asks for it (loading it costs every server)."""

    def make(**overrides) -> Settings:
        base = {"data_dir": str(tmp_path / "data"), "database_url": database_url,
                "demo_account": "false", "secret_key": "test-secret-" + _RUN_ID,
                "sweep_interval_seconds": "3600", "chat": {"builtin_local_model": False}}
        environ = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
        return load_settings(environ, overrides=merge_config(base, overrides))

    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
async def db(database_url):
    database = Database(database_url, pool_size=5)
    yield database
    await database.dispose()


@dataclass
class Customer:
    account_id: int
    email: str
    key_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}


async def make_customer(database_url: str, credit_nano: int, email: str | None = None,
                        spend_limit: int | None = None) -> Customer:
    """An account with `credit_nano` of credit (as one top-up) and one API key."""
    database = Database(database_url, pool_size=1)
    try:
        email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
        account = await create_account(database, email, "Test")
        if credit_nano:
            await add_credit(database, account.id, credit_nano, note="test credit")
        key, secret = await create_key(database, account.id, "test", spend_limit)
    finally:
        await database.dispose()
    return Customer(account.id, email, key.id, secret)


def run(coro):
    """Run a coroutine from a sync test (the server runs in its own thread and loop)."""
    return asyncio.run(coro)


async def assert_ledger_ok(database_url: str) -> None:
    database = Database(database_url, pool_size=1)
    try:
        problems = await verify(database)
    finally:
        await database.dispose()
    assert problems == [], problems
