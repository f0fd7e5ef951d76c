"""Alembic environment: runs migrations with a plain synchronous engine."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
# a database host that drops packets (a firewall, a stopped VM) must fail the start, or any
# command, within seconds with a clear line rather than hang for minutes
CONNECT_TIMEOUT_SECONDS = 10


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if url.startswith("postgres") \
        else {}
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    with engine.connect() as connection:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
