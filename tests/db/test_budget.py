"""The connection budget of one process, and what a client sees when it is spent: every
pooled connection busy answers 503 `database_busy` with Retry-After, not 500. On both
databases; the readiness endpoints on both too."""

from __future__ import annotations

import asyncio
import threading

import requests

from minitoolai.app import create_app
from minitoolai.config import load_settings
from minitoolai.db.engine import Database
from tests.conftest import make_customer, run
from tests.servers import ThreadedServer


def test_budget_is_the_sum_of_the_pools_and_is_configurable():
    settings = load_settings({"MINITOOLAI_DATABASE__POOL_SIZE": "3",
                              "MINITOOLAI_DATABASE__MAX_OVERFLOW": "2",
                              "MINITOOLAI_DATABASE__LEDGER_CONNECTIONS": "4"})
    assert settings.database.budget == 9
    assert load_settings({}).database.budget == 15  # the documented default


async def _pools_in_use(database_url: str) -> None:
    db = Database.from_settings(load_settings({}, overrides={
        "database_url": database_url,
        "database": {"pool_size": 2, "max_overflow": 1, "ledger_connections": 3}}))
    try:
        engine = db._reader.sync_engine.pool
        assert (engine.size(), engine._max_overflow) == (2, 1)
        if db._pg_ledger is not None:
            assert db._pg_ledger._pool_size == 3
    finally:
        await db.dispose()


def test_settings_reach_the_pools(database_url):
    run(_pools_in_use(database_url))


def test_pool_exhausted_answers_503_database_busy(make_settings, database_url):
    customer = run(make_customer(database_url, 10**9))
    settings = make_settings(database={"pool_size": 1, "max_overflow": 0,
                                       "pool_timeout_seconds": 0.3})
    app = create_app(settings)
    with ThreadedServer(app) as server:
        runtime = app.state.runtime
        loop = runtime.background[0].get_loop()  # the server's event loop
        taken, release = threading.Event(), threading.Event()

        async def hold_the_only_connection() -> None:
            async with runtime.db.read() as conn:
                await conn.exec_driver_sql("SELECT 1")
                taken.set()
                while not release.is_set():
                    await asyncio.sleep(0.02)

        holder = asyncio.run_coroutine_threadsafe(hold_the_only_connection(), loop)
        assert taken.wait(10)
        try:
            # the key is not cached yet: authenticating needs a pooled connection
            answer = requests.get(server.url + "/api/balance/", headers=customer.headers,
                                  timeout=10)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"] == "2"
            assert answer.json()["error"]["code"] == "database_busy"
            assert answer.json()["error"]["type"] == "service_unavailable"
            ready = requests.get(server.url + "/health/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        finally:
            release.set()
            holder.result(10)
        answer = requests.get(server.url + "/api/balance/", headers=customer.headers,
                              timeout=10)
        assert answer.status_code == 200, answer.text


def test_health_live_and_ready(make_settings, database_url):
    with ThreadedServer(create_app(make_settings())) as server:
        live = requests.get(server.url + "/health/live", timeout=10)
        assert (live.status_code, live.json()) == (200, {"status": "live"})
        ready = requests.get(server.url + "/health/ready", timeout=10)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready",
                                "checks": {"database": "ok", "migrations": "ok"}}
        assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}


def test_ready_says_when_migrations_are_behind(make_settings, database_url):
    """A database at an older revision than this code: 503, naming the revisions."""
    from sqlalchemy import text

    async def roll_back_one_branch() -> None:
        db = Database(database_url, pool_size=1)
        try:
            async with db.write() as conn:
                # the core's own line (0002_core, and whatever branch grew from it) back to
                # its first revision
                changed = await conn.execute(text(
                    "UPDATE alembic_version SET version_num = '0001_core'"
                    " WHERE version_num IN ('0002_core', 'ledger_0001')"))
                assert changed.rowcount == 1
        finally:
            await db.dispose()

    app = create_app(make_settings(), migrate=False)
    with ThreadedServer(app) as server:
        run(roll_back_one_branch())
        ready = requests.get(server.url + "/health/ready", timeout=10)
        assert ready.status_code == 503 and ready.headers["retry-after"] == "2"
        checks = ready.json()["checks"]
        assert checks["database"] == "ok"
        assert "0001_core" in checks["migrations"] and "db upgrade" in checks["migrations"]
