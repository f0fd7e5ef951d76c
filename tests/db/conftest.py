"""Fixtures of the database fault tests: a PostgreSQL database of the test's own (the
faults are injected into it alone), a fake upstream, and settings that serve chat through
it and images through the instant backend."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import make_url

from minitoolai.config import load_settings
from minitoolai.config import merge_dicts as merge_config
from tests.conftest import _RUN_ID, _pg_admin, _pg_reachable, _pg_template, _pg_url
from tests.fakes.openai_upstream import FakeOpenAI


@pytest.fixture(scope="session")
def upstream():
    with FakeOpenAI(api_key="sk-upstream") as fake:
        yield fake


def _pg_database(template: str | None):
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    name = f"minitoolai_test_{_RUN_ID}_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


@pytest.fixture
def pg_name():
    """A migrated PostgreSQL database of this test's own (its name)."""
    name = _pg_database(_pg_template())
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_pg_name():
    """An empty PostgreSQL database of this test's own: never migrated."""
    name = _pg_database(None)
    yield name
    _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fault_settings(tmp_path, upstream):
    """Settings for a server on `database_url`: chat relayed to the fake upstream, images
    by the instant backend, short database timeouts."""

    def make(database_url: str, **overrides):
        base = {"data_dir": str(tmp_path / "data"), "database_url": database_url,
                "demo_account": "false", "secret_key": "test-secret-" + _RUN_ID,
                "sweep_interval_seconds": "3600", "rate_limit_per_minute": "0",
                "database": {"connect_timeout_seconds": 2, "pool_timeout_seconds": 2,
                             "ready_timeout_seconds": 1},
                "chat": {"builtin_local_model": False,
                         "providers": {"openai": {"base_url": upstream.base_url,
                                                  "api_key": "sk-upstream",
                                                  "read_timeout": 5}}},
                "images": {"models": {"realvision": {"backend": "instant"}},
                           "poll_interval_seconds": 0.05}}
        environ = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
        return load_settings(environ, overrides=merge_config(base, overrides))

    return make


def pg_url(name: str, port: int | None = None) -> str:
    """The database's URL, through `port` (a TcpProxy's) when given."""
    url = make_url(_pg_url(name))
    if port is not None:
        url = url.set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)
