"""The ledger's hot path alone: reserve + settle pairs on a fresh SQLite file (or a
PostgreSQL URL), sequential and concurrent. No HTTP, no upstream.

    python bench/ledger_ops.py [-n 500] [--database-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minitoolai.accounts.store import create_account, create_key  # noqa: E402
from minitoolai.db.engine import Database  # noqa: E402
from minitoolai.db.migrate import upgrade  # noqa: E402
from minitoolai.ledger.credits import add_credit  # noqa: E402
from minitoolai.ledger.holds import UsageRecord, reserve, settle  # noqa: E402
from minitoolai.ledger.verify import verify  # noqa: E402


async def main(n: int, url: str) -> None:
    upgrade(url)
    db = Database(url)
    account = await create_account(db, f"bench-{time.time_ns()}@example.com")
    await add_credit(db, account.id, 10**15)
    key, _ = await create_key(db, account.id, "bench")
    record = UsageRecord(endpoint="bench", model="bench", prompt_tokens=10,
                         completion_tokens=5)

    async def pair(tag: str) -> None:
        await reserve(db, request_id=tag, account_id=account.id, key_id=key.id, amount=10_000,
                      kind="chat", ttl_seconds=60)
        await settle(db, tag, 5_000, record, account_id=account.id)

    tags = [f"s{i}-{time.time_ns()}" for i in range(n)]
    started = time.perf_counter()
    for tag in tags:
        await reserve(db, request_id=tag, account_id=account.id, key_id=key.id, amount=10_000,
                      kind="chat", ttl_seconds=60)
    reserving = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for tag in tags:
        await settle(db, tag, 5_000, record, account_id=account.id)
    settling = (time.perf_counter() - started) / n
    sequential = reserving + settling
    started = time.perf_counter()
    await asyncio.gather(*(pair(f"c{i}-{time.time_ns()}") for i in range(n)))
    concurrent = n / (time.perf_counter() - started)
    problems = await verify(db)
    await db.dispose()
    print(f"database: {url.split('@')[-1]}")
    print(f"sequential: {sequential * 1e3:.3f} ms per reserve+settle (reserve"
          f" {reserving * 1e6:.0f} us, settle {settling * 1e6:.0f} us)")
    print(f"concurrent ({n} at once): {concurrent:.0f} reserve+settle per second")
    print("ledger verify:", "OK" if not problems else problems)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    asyncio.run(main(args.n, url))
