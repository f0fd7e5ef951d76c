"""The soak run of issue 11: three `serve` and two `worker` processes on one PostgreSQL and
Redis, under a steady load of chat and image requests, while the database is dropped and
restored (10 times by default), Redis dropped, a server killed -9 and workers stopped and
killed; then every served request matched with its charge, and `ledger verify`.

    python bench/soak.py                          # the default: ~3-4 minutes here
    python bench/soak.py --db-drops 20 --calm 10  # longer
    python bench/soak.py --keep /tmp/soak         # keep the processes' logs there

Needs PostgreSQL on 127.0.0.1:5432 (MTAI_TEST_PG) and Redis on 127.0.0.1:6379; it
creates its own database (dropped after) and uses its own Redis key prefix (deleted
after). The topology, the load, the faults and the accounting are in tests/soak.py (the
CI test tests/db/test_soak.py runs the same with fewer faults). Exits 1 if any target was
missed: a 500, a charge not exact, `ledger verify` failing, readiness not truthful, or a
recovery slower than 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform as host
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import free_port, wait_http  # noqa: E402
from tests.soak import (  # noqa: E402
    TARGET_SECONDS,
    Platform,
    SoakOptions,
    account,
    figures_of,
    report,
    soak,
)


def parse() -> tuple[SoakOptions, argparse.Namespace]:
    defaults = SoakOptions()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db-drops", type=int, default=defaults.db_drops)
    p.add_argument("--terminate-every", type=int, default=defaults.terminate_every,
                   help="every Nth database drop is pg_terminate_backend instead of a cut")
    p.add_argument("--redis-drops", type=int, default=defaults.redis_drops)
    p.add_argument("--serve-kills", type=int, default=defaults.serve_kills)
    p.add_argument("--worker-terms", type=int, default=defaults.worker_terms)
    p.add_argument("--worker-kills", type=int, default=defaults.worker_kills)
    p.add_argument("--down", type=float, default=defaults.down_seconds,
                   help="seconds each cut lasts")
    p.add_argument("--calm", type=float, default=defaults.calm_seconds,
                   help="seconds after each restore before the next fault")
    p.add_argument("--warmup", type=float, default=defaults.warmup_seconds)
    p.add_argument("--chat-clients", type=int, default=defaults.chat_clients)
    p.add_argument("--image-clients", type=int, default=defaults.image_clients)
    p.add_argument("--keep", type=Path, help="a directory for the logs, kept after")
    args = p.parse_args()
    options = SoakOptions(
        db_drops=args.db_drops, terminate_every=args.terminate_every,
        redis_drops=args.redis_drops, serve_kills=args.serve_kills,
        worker_terms=args.worker_terms, worker_kills=args.worker_kills,
        down_seconds=args.down, calm_seconds=args.calm, warmup_seconds=args.warmup,
        chat_clients=args.chat_clients, image_clients=args.image_clients)
    return options, args


def versions() -> str:
    pg = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
                         "SHOW server_version"], capture_output=True, text=True,
                        check=False).stdout.strip()
    rd = subprocess.run(["redis-cli", "INFO", "server"], capture_output=True, text=True,
                        check=False).stdout
    rd = next((line.split(":", 1)[1].strip() for line in rd.splitlines()
               if line.startswith("redis_version:")), "?")
    return (f"Python {host.python_version()}, PostgreSQL {pg or '?'}, Redis {rd},"
            f" {host.platform()}")


def main() -> int:
    options, args = parse()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="minitoolai-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_upstream.py"),
                                 "--port", str(port), "--chunks", "3"],
                                stdout=subprocess.DEVNULL)
    print(versions())
    print(f"faults: {', '.join(name for name, _ in options.faults())}; logs in {workdir}")
    started = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/stats", upstream)
        with Platform(workdir, f"http://127.0.0.1:{port}/v1", "sk-bench", options) as platform:
            print(f"platform up in {time.monotonic() - started:.1f} s:"
                  f" {options.servers} serve, {options.workers} worker, database"
                  f" {platform.db_name}")
            load, faults = asyncio.run(soak(platform))
            with (workdir / "answers.jsonl").open("w") as out:  # for a post-mortem
                for answer in load.answers:
                    out.write(json.dumps(asdict(answer)) + "\n")
            figures = figures_of(load, faults)
            acc = account(platform, load)
            table = report(figures, acc, load)
    finally:
        upstream.terminate()
        upstream.wait()
    print()
    print(table)
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    missed = []
    for f in figures:
        if f.status_500 or f.other_5xx:
            missed.append(f"{f.fault.name}: {f.status_500} x 500, {f.other_5xx} other 5xx")
        if f.without_retry_after:
            missed.append(f"{f.fault.name}: 503 without Retry-After")
        if f.ready_lies or f.ready_false_alarms:
            missed.append(f"{f.fault.name}: readiness untruthful")
        slow = f.worst_recovery
        if f.fault.kind not in ("none", "serve-kill") and (slow is None or slow > TARGET_SECONDS):
            missed.append(f"{f.fault.name}: serving again after {slow} s")
        for example in f.examples:
            missed.append(f"  {example}")
    if not acc.exact:
        missed.append("charges not exact")
    if not acc.verify_ok:
        missed.append("ledger verify failed:\n" + acc.verify_output)
    for line in missed:
        print("MISSED", line)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
