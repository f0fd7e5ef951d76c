"""How long the dashboard's pages take with a lot of usage behind them.

Seeds a fresh SQLite data directory (or a fresh PostgreSQL database with --postgres) with one
customer who made `--rows` requests spread over the last 30 days across 6 models, plus an
operator, starts `minitoolai serve` in its own process, logs both in through the real forms
and times each page `--repeats` times from a `requests` client (median and max, ms).
Also times one login (argon2 verification included).

    python bench/dashboard_pages.py                 # 50,000 usage rows, SQLite
    python bench/dashboard_pages.py --rows 200000 --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

import psycopg
import requests
from sqlalchemy import insert

from minitoolai.accounts.store import create_account, set_account_flags
from minitoolai.clock import utcnow
from minitoolai.dashboard.passwords import set_password
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.db.tables import usage

PASSWORD = "bench password"
MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-5-mini", "realvision", "espeak-ng"]
PAGES = ["/", "/usage", "/usage?model=gpt-4o", "/usage.csv", "/keys", "/docs", "/admin",
         "/admin/accounts", "/admin/catalog", "/admin/accounts/{customer}"]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def seed(url: str, rows: int) -> int:
    db = Database(url, pool_size=2)
    try:
        customer = await create_account(db, "customer@example.com")
        await set_password(db, customer.id, PASSWORD)
        admin = await create_account(db, "ops@example.com")
        await set_password(db, admin.id, PASSWORD)
        await set_account_flags(db, admin.id, is_admin=True)
        now = utcnow()
        rng = random.Random(7)
        batch = []
        for i in range(rows):
            model = rng.choice(MODELS)
            batch.append({
                "request_id": f"bench-{i}", "account_id": customer.id, "key_id": None,
                "created_at": now - timedelta(seconds=rng.randrange(30 * 86400)),
                "endpoint": "/api/chat-completions", "model": model,
                "prompt_tokens": rng.randrange(2000), "completion_tokens": rng.randrange(800),
                "cost": rng.randrange(1, 2_000_000), "status": "ok", "latency_ms": 900})
            if len(batch) == 5000:
                async with db.write() as conn:
                    await conn.execute(insert(usage), batch)
                batch = []
        if batch:
            async with db.write() as conn:
                await conn.execute(insert(usage), batch)
        return customer.id
    finally:
        await db.dispose()


def login(base: str, email: str) -> tuple[requests.Session, float]:
    http = requests.Session()
    page = http.get(base + "/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    start = time.perf_counter()
    response = http.post(base + "/login", data={"csrf_token": token, "email": email,
                                                "password": PASSWORD}, allow_redirects=False)
    elapsed = time.perf_counter() - start
    assert response.status_code == 303, response.text
    return http, elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="mtai-dash-bench-"))
    pg_name = None
    if args.postgres:
        pg_name = f"mtai_dash_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    else:
        url = f"sqlite:///{data_dir / 'minitoolai.sqlite3'}"
    upgrade(url)
    started = time.perf_counter()
    customer = asyncio.run(seed(url, args.rows))
    print(f"seeded {args.rows} usage rows in {time.perf_counter() - started:.1f}s ({url})")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": url, "MINITOOLAI_DATA_DIR": str(data_dir),
           "MINITOOLAI_DEMO_ACCOUNT": "false", "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false"}
    server = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve", "--port",
                               str(port)], env=env, cwd=data_dir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if requests.get(base + "/health", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        customer_http, customer_login = login(base, "customer@example.com")
        admin_http, _ = login(base, "ops@example.com")
        print(f"login (argon2 verify + session): {customer_login * 1000:.0f} ms")
        print(f"| page | bytes | median ms | max ms |\n|---|---:|---:|---:|")
        for path in PAGES:
            path = path.format(customer=customer)
            http = admin_http if path.startswith("/admin") else customer_http
            times, size = [], 0
            for _ in range(args.repeats):
                start = time.perf_counter()
                response = http.get(base + path)
                times.append((time.perf_counter() - start) * 1000)
                assert response.status_code == 200, (path, response.status_code)
                size = len(response.content)
            print(f"| `{path}` | {size} | {statistics.median(times):.0f} | {max(times):.0f} |")
    finally:
        server.terminate()
        server.wait(timeout=30)
        if pg_name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
