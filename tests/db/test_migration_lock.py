"""Migrations run once however many processes start together on a fresh database: three
`minitoolai serve` processes at once all come up, and so do three upgrades in threads
(on SQLite, the file lock next to the database is what keeps them apart)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from minitoolai.db.migrate import expected_heads, sqlite_lock_path, upgrade
from tests.conftest import _RUN_ID
from tests.db.conftest import pg_url
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


def _revisions(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_three_upgrades_at_once_on_a_fresh_database(backend, tmp_path, request):
    if backend == "sqlite":
        path = tmp_path / "fresh.sqlite3"
        url = f"sqlite:///{path}"
    else:
        url = pg_url(request.getfixturevalue("fresh_pg_name"))
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def migrate() -> None:
        start.wait()
        try:
            upgrade(url)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    if backend == "sqlite":
        import sqlite3

        with sqlite3.connect(path) as conn:
            found = {r[0] for r in conn.execute("SELECT version_num FROM alembic_version")}
        assert sqlite_lock_path(str(path)).exists()  # next to the database
    else:
        found = _revisions(url)
    assert found == set(expected_heads())


def test_three_serve_processes_at_once_on_a_fresh_postgresql(fresh_pg_name, tmp_path):
    url = pg_url(fresh_pg_name)
    ports = [free_port() for _ in range(3)]
    processes = []
    for n, port in enumerate(ports):
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")},
               "PYTHONPATH": str(ROOT), "MINITOOLAI_DATABASE_URL": url,
               "MINITOOLAI_DATA_DIR": str(tmp_path / f"machine{n}"),
               "MINITOOLAI_SECRET_KEY": "test-secret-" + _RUN_ID,
               "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false", "MINITOOLAI_LOG_LEVEL": "warning",
               "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "minitoolai.cli.main", "serve", "--port", str(port)],
            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    try:
        waiting = set(range(3))
        deadline = time.monotonic() + 60
        while waiting and time.monotonic() < deadline:
            for n in list(waiting):
                assert processes[n].poll() is None, processes[n].communicate()[0].decode()
                try:
                    answer = requests.get(f"http://127.0.0.1:{ports[n]}/health/ready", timeout=2)
                except requests.ConnectionError:
                    continue
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "ready"
                waiting.discard(n)
            time.sleep(0.2)
        assert not waiting, f"servers {sorted(waiting)} did not come up"
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    assert _revisions(url) == set(expected_heads())
    with psycopg.connect(url) as conn:  # the first-run demo account, made once
        assert conn.execute("SELECT count(*) FROM accounts").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM api_keys").fetchone()[0] == 1


def test_the_heads_read_without_alembic_are_alembics():
    """/health/ready compares the database with heads read from the scripts directly (a
    server never imports Alembic): they must be the ones Alembic computes."""
    from minitoolai.db import revisions

    assert revisions.expected_heads() == expected_heads()
