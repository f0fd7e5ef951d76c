"""Apply Alembic migrations programmatically (`minitoolai db upgrade`, and `serve` at start).

Each capability keeps its migrations on its own Alembic branch that starts from the core's
first revision, so they never conflict; `upgrade heads` applies every branch.

Every process that starts (`serve`, `worker`, each CLI command) migrates, so several may
start together on one fresh database: `upgrade` runs under a lock, one process at a time,
and the ones after the first find nothing left to do. PostgreSQL: a session advisory lock
(held by a connection of its own, so it goes with the process if it dies); SQLite: an
exclusive file lock next to the database file (fcntl; released by the OS likewise).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import make_url

from minitoolai.db.engine import sync_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock's key: any bigint no other application on the database uses ("mtaimigr")
ADVISORY_LOCK_KEY = int.from_bytes(b"mtaimigr", "big") & (2**63 - 1)
LOCK_WAIT_SECONDS = 300  # a migration that takes longer than this is stuck, not slow
LOCK_CONNECT_TIMEOUT_SECONDS = 10


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    return cfg


@functools.cache
def expected_heads() -> frozenset[str]:
    """The revisions a database migrated by this code is at (one per branch)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(cfg).get_heads())


def sqlite_lock_path(database_path: str) -> Path:
    return Path(database_path + ".migrate-lock")


@contextmanager
def migration_lock(database_url: str) -> Iterator[None]:
    """Hold the database's migration lock (waiting for another process that holds it)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = url.database
        if not path or path == ":memory:":
            yield  # a private database: nobody to race
            return
        import fcntl  # POSIX; SQLite deployments on Windows are not supported

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(sqlite_lock_path(path), "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return
    # a silent database host must fail the command in seconds, as in migrations/env.py
    engine = create_engine(sync_url(database_url), poolclass=pool.NullPool,
                           isolation_level="AUTOCOMMIT",
                           connect_args={"connect_timeout": LOCK_CONNECT_TIMEOUT_SECONDS})
    try:
        with engine.connect() as conn:
            # an advisory lock waits like any other lock: bounded by lock_timeout
            conn.exec_driver_sql(f"SET lock_timeout = '{LOCK_WAIT_SECONDS}s'")
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"),
                             {"key": ADVISORY_LOCK_KEY})
    finally:
        engine.dispose()


def upgrade(database_url: str) -> None:
    """Bring the database to the newest revision of every branch, one process at a time."""
    with migration_lock(database_url):
        command.upgrade(alembic_config(database_url), "heads")
