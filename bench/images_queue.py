"""What the image job queue adds: submit-to-success latency and jobs/s, with the INSTANT
backend (a test/benchmark backend that answers a plain PNG at once, so only the queue,
the ledger, storage and HTTP are measured, not a model).

Starts `minitoolai serve` in its own process (SQLite by default, or a fresh PostgreSQL
database with --postgres), with one funded account and key, then:

1. latency: `--latency-jobs` jobs submitted one at a time with the seed's request; for each,
   the time from the job row's creation (committed at submit) to its success (committed
   with the charge), from the database: the latency the queue adds. Also the client's view,
   submit -> polling the jobs endpoint every 2 ms until success.
2. throughput: `--jobs` jobs submitted by `--concurrency` concurrent clients; jobs/s from the
   first submit to the last success (read from the database, so polling by the client
   does not load the server), and how many images were charged.

    python bench/images_queue.py
    python bench/images_queue.py --postgres --jobs 3000 --accounts 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import psycopg
from sqlalchemy import func, select

from minitoolai.accounts.store import create_account, create_key
from minitoolai.clock import as_utc
from minitoolai.db.engine import Database
from minitoolai.db.migrate import upgrade
from minitoolai.db.tables import ledger_entries
from minitoolai.images.tables import image_jobs
from minitoolai.ledger.credits import add_credit
from minitoolai.ledger.verify import verify

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
BODY = {"model": "realvision", "prompt": "a lighthouse at dusk", "negativePrompt": "blur",
        "scheduler": "DPM++ SDE", "steps": 4, "cfgScale": 2.0, "width": 512, "height": 512}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def seed_accounts(url: str, count: int) -> list[str]:
    """`count` funded accounts with one key each."""
    db = Database(url, pool_size=1)
    keys = []
    try:
        for i in range(count):
            account = await create_account(db, f"bench{i}@example.com")
            await add_credit(db, account.id, 10**12, note="bench")  # $1000
            keys.append((await create_key(db, account.id, "bench"))[1])
    finally:
        await db.dispose()
    return keys


async def job_latencies(url: str, ids: list[int]) -> list[float]:
    db = Database(url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(image_jobs.c.created_at, image_jobs.c.finished_at)
                                       .where(image_jobs.c.id.in_(ids)))).all()
    finally:
        await db.dispose()
    return [(as_utc(r.finished_at) - as_utc(r.created_at)).total_seconds() * 1000 for r in rows]


async def finish_times(url: str, ids: list[int]) -> list[float]:
    """Epoch seconds at which each finished job succeeded (unfinished ones left out)."""
    db = Database(url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(image_jobs.c.finished_at).where(
                image_jobs.c.id.in_(ids), image_jobs.c.state == "success"))).all()
    finally:
        await db.dispose()
    return [as_utc(r.finished_at).timestamp() for r in rows]


async def summary(url: str) -> tuple[dict, int, list[str]]:
    db = Database(url, pool_size=1)
    try:
        async with db.read() as conn:
            states = dict((await conn.execute(select(image_jobs.c.state, func.count())
                                              .group_by(image_jobs.c.state))).all())
            charges = (await conn.execute(select(func.count()).where(
                ledger_entries.c.kind == "charge"))).scalar_one()
        problems = await verify(db)
    finally:
        await db.dispose()
    return states, charges, problems


async def submit(session, base: str, key: str) -> dict:
    async with session.post(base + "/api/texttoimage/", json=BODY,
                            headers={"Authorization": f"Bearer {key}"}) as response:
        body = await response.json()
        assert body["status"] == "success", body
        return body


async def wait_success(session, base: str, ticket: dict, interval: float) -> None:
    while True:
        async with session.post(base + "/api/texttoimage/jobs/", json=ticket) as response:
            body = await response.json()
        if body["status"] == "success":
            return
        assert body["status"] in ("queued", "processing"), body
        await asyncio.sleep(interval)


async def run(base: str, url: str, keys: list[str], args) -> dict:
    key = keys[0]
    out: dict = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        for _ in range(20):  # warm-up: connections, caches, the first PNG of this size
            ticket = await submit(session, base, key)
            await wait_success(session, base, {"jobid": ticket["jobid"],
                                               "signature": ticket["signature"]}, 0.002)
        ids, client_ms = [], []
        for _ in range(args.latency_jobs):
            started = time.perf_counter()
            ticket = await submit(session, base, key)
            await wait_success(session, base, {"jobid": ticket["jobid"],
                                               "signature": ticket["signature"]}, 0.002)
            client_ms.append((time.perf_counter() - started) * 1000)
            ids.append(ticket["jobid"])
        queue_ms = await job_latencies(url, ids)
        out["latency"] = {"queue_p50": pct(queue_ms, 50), "queue_p99": pct(queue_ms, 99),
                          "client_p50": pct(client_ms, 50), "client_p99": pct(client_ms, 99)}

        tickets: list[dict] = []
        counter = iter(range(args.jobs))

        async def client(own_key: str):
            for _ in counter:
                tickets.append(await submit(session, base, own_key))

        started_wall = time.time()
        started = time.perf_counter()
        await asyncio.gather(*(client(keys[i % len(keys)]) for i in range(args.concurrency)))
        submitted = time.perf_counter() - started
        # the last ticket, through the jobs endpoint; then the rest from the database
        await wait_success(session, base, {"jobid": tickets[-1]["jobid"],
                                           "signature": tickets[-1]["signature"]}, 0.01)
        ids = [t["jobid"] for t in tickets]
        while True:
            finished = await finish_times(url, ids)
            if len(finished) == len(ids):
                break
            await asyncio.sleep(0.05)
        done = max(finished) - started_wall
        load_ms = await job_latencies(url, ids)
        out["throughput"] = {"jobs": args.jobs, "submit_s": submitted, "all_done_s": done,
                             "submits_per_s": args.jobs / submitted,
                             "jobs_per_s": args.jobs / done,
                             "queue_p50_under_load": pct(load_ms, 50),
                             "queue_p99_under_load": pct(load_ms, 99)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="embedded worker loops")
    parser.add_argument("--accounts", type=int, default=1,
                        help="customers the concurrent clients are spread over (each submit"
                             " holds its account's row until commit)")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="bench-images-"))
    pg_name = None
    if args.postgres:
        pg_name = f"bench_images_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg_name}"')
        url = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    else:
        url = f"sqlite:///{data / 'minitoolai.sqlite3'}"
    upgrade(url)
    keys = asyncio.run(seed_accounts(url, args.accounts))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
    env.update({
        "MINITOOLAI_DATA_DIR": str(data), "MINITOOLAI_DATABASE_URL": url,
        "MINITOOLAI_PORT": str(port), "MINITOOLAI_DEMO_ACCOUNT": "false",
        "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LOG_LEVEL": "warning",
        "MINITOOLAI_IMAGES__MODELS": json.dumps({"realvision": {"backend": "instant"}}),
        "MINITOOLAI_IMAGES__EMBEDDED_WORKERS": str(args.workers),
        "MINITOOLAI_IMAGES__MAX_QUEUED": str(args.jobs * 2),
        "OPENAI_API_KEY": "",
    })
    server = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start: "
                                     + (server.stderr.read().decode() if server.stderr else ""))
                time.sleep(0.1)
        result = asyncio.run(run(base, url, keys, args))
        states, charges, problems = asyncio.run(summary(url))
    finally:
        server.terminate()
        server.wait(timeout=30)
        if pg_name:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    lat, thr = result["latency"], result["throughput"]
    print(f"database: {'postgresql' if args.postgres else 'sqlite'}; embedded workers:"
          f" {args.workers}; load average: {os.getloadavg()[0]:.1f}")
    print(f"latency ({args.latency_jobs} jobs one at a time): queue p50 {lat['queue_p50']:.1f} ms"
          f" p99 {lat['queue_p99']:.1f} ms; client submit->success p50"
          f" {lat['client_p50']:.1f} ms p99 {lat['client_p99']:.1f} ms")
    print(f"throughput ({thr['jobs']} jobs, {args.concurrency} clients, {args.accounts}"
          f" account(s)): submits"
          f" {thr['submits_per_s']:.0f}/s; {thr['jobs_per_s']:.0f} jobs/s submit->all success"
          f" ({thr['all_done_s']:.2f} s); queue latency under load p50"
          f" {thr['queue_p50_under_load']:.0f} ms p99 {thr['queue_p99_under_load']:.0f} ms")
    print(f"jobs by state: {states}; charges: {charges}; ledger verify:"
          f" {'ok' if not problems else problems}")


if __name__ == "__main__":
    main()
