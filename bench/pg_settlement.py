"""PostgreSQL's CPU for the leased settlement statement, per transaction and per settlement.

Several servers on one account each commit their own settlements, so with the load split
over more servers each transaction carries fewer of them: what a transaction costs
PostgreSQL whatever it carries is what more servers add per request. This runs
`SETTLE_LEASED_MANY` (ledger/lease_settlements.py) on a database of its own, N times per
batch size, in an explicit transaction (BEGIN, the statement, COMMIT: three round trips)
and alone (the statement is its own transaction: one round trip), and reads the backend's
CPU time from /proc/PID/schedstat (PostgreSQL must run on this machine).

    python bench/pg_settlement.py [--sizes 1,2,8,32] [-n 400]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minitoolai.clock import utcnow
from minitoolai.db import migrate
from minitoolai.db.pg_ledger import numbered
from minitoolai.ledger.lease_settlements import _COLUMNS, SETTLE_LEASED_MANY

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def backend_cpu(pid: int) -> float:
    """Seconds the process has run on a CPU: schedstat counts nanoseconds (/proc/PID/stat
    counts 10 ms ticks, too coarse for a fraction of a millisecond per transaction)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def settlements(lease_id: str, size: int) -> dict:
    rows = [{"id": uuid.uuid4().hex, "lease_id": lease_id, "account_id": 1, "key_id": None,
             "charge": 1000, "endpoint": "chat", "model": "gpt-4o-mini", "prompt_tokens": 10,
             "completion_tokens": 20, "images": 0, "characters": 0, "status": "ok",
             "estimated": False, "latency_ms": 5, "note": "chat gpt-4o-mini"}
            for _ in range(size)]
    arrays = {name: [r[key] for r in rows] for name, key in _COLUMNS}
    arrays["live_ids"] = [lease_id]
    arrays["now"] = utcnow()
    return arrays


async def measure(dsn: str, sizes: list[int], n: int) -> None:
    conn = await asyncpg.connect(dsn)
    pid = conn.get_server_pid()
    lease_id = uuid.uuid4().hex
    now = utcnow()
    await conn.execute("INSERT INTO accounts (id, email, balance, held, created_at)"
                       " VALUES (1, 'bench@example.com', 0, 0, $1)", now)
    await conn.execute("INSERT INTO credit_leases (id, account_id, owner, amount, charged,"
                       " created_at, expires_at) VALUES ($1, 1, 'bench', $2, 0, $3, $3)",
                       lease_id, 10**15, now)
    sql, names = numbered(SETTLE_LEASED_MANY)
    if os.environ.get("PLAN"):
        await conn.execute(f"SET plan_cache_mode = {os.environ['PLAN']}")
    print(f"{'size':>5} {'mode':<12} {'PG CPU ms/txn':>14} {'client wall ms/txn':>19}")
    for size in sizes:
        for mode in ("transaction", "alone"):
            for _ in range(20):  # warm the plan cache
                await conn.fetchrow(sql, *[settlements(lease_id, size)[k] for k in names])
            batches = [settlements(lease_id, size) for _ in range(n)]
            cpu0, wall0 = backend_cpu(pid), asyncio.get_running_loop().time()
            for arrays in batches:
                args = [arrays[k] for k in names]
                if mode == "transaction":
                    async with conn.transaction():
                        await conn.fetchrow(sql, *args)
                else:
                    await conn.fetchrow(sql, *args)
            wall = asyncio.get_running_loop().time() - wall0
            cpu = backend_cpu(pid) - cpu0
            print(f"{size:>5} {mode:<12} {cpu * 1000 / n:>14.3f} {wall * 1000 / n:>19.3f}",
                  flush=True)
    await conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,2,8,32", help="settlements per transaction")
    ap.add_argument("-n", type=int, default=400, help="transactions per size and mode")
    args = ap.parse_args()
    dbname = f"minitoolai_settle_{os.getpid()}"
    engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text(f'CREATE DATABASE "{dbname}"'))
    try:
        migrate.upgrade(f"postgresql://postgres@127.0.0.1:5432/{dbname}")
        asyncio.run(measure(f"postgresql://postgres@127.0.0.1:5432/{dbname}",
                            [int(s) for s in args.sizes.split(",")], args.n))
    finally:
        with engine.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
