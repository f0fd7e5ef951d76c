"""One hot account on PostgreSQL, served by one server process and then by two.

One run, all on loopback:
  1. a fresh database on the PostgreSQL at 127.0.0.1:5432 (dropped after), a fast fake
     upstream (bench/fake_upstream.py), one account with $1,000,000 and one key;
  2. two `minitoolai serve` processes on that database, both running throughout;
  3. rounds that alternate (1 server, 2 servers, 1, 2, ...): two wrk processes of c/2
     connections each, both against server A (1 server) or one against each (2 servers),
     so the load is the same c connections on one account either way; with --per-server,
     each of 2 servers gets c connections (2c in all) where 1 server gets c: the load grows
     with the servers, as when servers are added because it grew (bench/hot_account_model.py);
  4. per round: req/s (both wrk summed), server CPU per request (both servers' user+system
     time over the requests the upstream served), PostgreSQL CPU per request (the CPU time
     of this database's backends, read from /proc/PID/stat, pids from pg_stat_activity),
     and how often a backend of this database was seen waiting on a lock (pg_stat_activity
     sampled every 20 ms: the `Lock:transactionid` waits of the issue);
  5. `minitoolai ledger verify` at the end, and charges compared with requests served.

    python bench/hot_account.py                          # credit leases off (as on main)
    python bench/hot_account.py --lease-size 1           # leases of $1 per server and account
    python bench/hot_account.py --rounds 3 -d 8 --json out.json

To measure another copy of the package (main, before this change), run with
PYTHONPATH=/path/to/copy and without --lease-size (main does not know the setting).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from gateway_probe import LedgerCounter, cpu_seconds
from harness import cli as run_cli
from harness import free_port, wait_http
from sqlalchemy import create_engine, text
from wrkrun import run_wrk, wrk_available

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
EMAIL = "hot@example.com"
PROMPT = "Which is the largest U.S. state by area? Answer in one short sentence."
ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
TICK = os.sysconf("SC_CLK_TCK")


def admin(sql: str) -> None:
    engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(sql))
    engine.dispose()


def body(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "stream": stream,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()


def upstream_count(port: int) -> int:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return json.loads(response.read())["requests"]


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process in seconds (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


class PgWatch:
    """This database's backends: their CPU time, and lock waits sampled while running."""

    def __init__(self, dbname: str) -> None:
        self.engine = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
        self.dbname = dbname
        self.samples = self.lock_waits = self.busy = 0
        self.waits: dict[str, int] = {}
        self._stop = threading.Event()
        self._seen: dict[int, float] = {}

    def pids(self) -> list[int]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <>"
                " pg_backend_pid()"), {"d": self.dbname})]

    def commits(self) -> int:
        """Transactions committed in this database (pg_stat_database: flushed by each
        backend at most once a second, hence the pause after each round)."""
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT xact_commit FROM pg_stat_database"
                                     " WHERE datname = :d"), {"d": self.dbname}).scalar_one()

    def cpu(self) -> dict[int, float]:
        return {pid: c for pid in self.pids() if (c := proc_cpu(pid)) is not None}

    def _sample(self) -> None:
        with self.engine.connect() as conn:
            while not self._stop.wait(0.02):
                rows = conn.execute(text(
                    "SELECT state, wait_event_type, wait_event FROM pg_stat_activity"
                    " WHERE datname = :d AND pid <> pg_backend_pid()"),
                    {"d": self.dbname}).all()
                self.samples += 1
                for state, wtype, wevent in rows:
                    if state == "active":
                        self.busy += 1
                    if wtype == "Lock":
                        self.lock_waits += 1
                        name = f"Lock:{wevent}"
                        self.waits[name] = self.waits.get(name, 0) + 1

    def start(self) -> None:
        self.samples = self.lock_waits = self.busy = 0
        self.waits = {}
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser(description="one account, one server vs two, on PostgreSQL")
    ap.add_argument("-d", "--duration", type=float, default=8.0, help="seconds per run")
    ap.add_argument("-c", "--concurrency", type=int, default=32, help="connections in all")
    ap.add_argument("--per-server", action="store_true",
                    help="c connections per server (2 servers: 2c in all), not c in all")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of (1 server, 2 servers)")
    ap.add_argument("--nostream", action="store_true", help="non-streamed requests")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    ap.add_argument("--lease-size", default=None,
                    help="MINITOOLAI_LEASES__SIZE (USD); unset: the package's default")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="more settings for the servers, e.g. MINITOOLAI_LEASES__TICK_SECONDS=2")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    args = ap.parse_args()
    if not wrk_available():
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    stream = not args.nostream
    dbname = f"minitoolai_hot_{os.getpid()}"
    admin(f'CREATE DATABASE "{dbname}"')
    database_url = f"postgresql://postgres@127.0.0.1:5432/{dbname}"
    data_dir = Path(tempfile.mkdtemp(prefix="minitoolai-hot-"))
    fake_port, ports = free_port(), [free_port(), free_port()]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINITOOLAI_") and not k.startswith("OPENAI_")}
    env.update({
        "MINITOOLAI_DATA_DIR": str(data_dir), "MINITOOLAI_DATABASE_URL": database_url,
        "MINITOOLAI_DEMO_ACCOUNT": "false", "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0",
        "MINITOOLAI_LOG_LEVEL": "warning", "MINITOOLAI_ACCESS_LOG": "false",
        "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "sk-bench",
    })
    if args.lease_size is not None:
        env["MINITOOLAI_LEASES__SIZE"] = args.lease_size
    env.update(item.split("=", 1) for item in args.env)
    import minitoolai
    results: dict = {"argv": sys.argv, "config": vars(args), "database": "postgresql",
                     "package": str(Path(minitoolai.__file__).parent),
                     "cpus": os.cpu_count(), "rounds": []}
    procs: list[subprocess.Popen] = []
    watch = PgWatch(dbname)
    try:
        fake = subprocess.Popen([sys.executable, str(HERE / "fake_upstream.py"), "--port",
                                 str(fake_port), "--chunks", str(args.chunks)],
                                stdout=subprocess.DEVNULL)
        procs.append(fake)
        wait_http(f"http://127.0.0.1:{fake_port}/stats", fake)
        run_cli(env, "db", "upgrade", cwd=data_dir)
        run_cli(env, "accounts", "create", EMAIL, "--credit", "1000000", cwd=data_dir)
        api_key = run_cli(env, "keys", "create", EMAIL, cwd=data_dir).strip().splitlines()[-1]
        servers = []
        for port in ports:
            server = subprocess.Popen(
                [sys.executable, "-m", "minitoolai.cli.main", "serve", "--port", str(port)],
                env=env, cwd=data_dir, stdout=subprocess.DEVNULL)
            procs.append(server)
            servers.append(server)
        for port, server in zip(ports, servers, strict=True):
            wait_http(f"http://127.0.0.1:{port}/health", server)
        ps = [psutil.Process(s.pid) for s in servers]
        urls = [f"http://127.0.0.1:{p}/api/chat-completions/" for p in ports]
        counter = LedgerCounter(database_url)
        half = args.concurrency // 2
        payload = body(stream)

        def load(targets: list[str], seconds: float) -> list:
            out: list = [None, None]
            # one wrk per server, of c connections, with --per-server and 2 servers
            each = args.concurrency if args.per_server and targets[0] != targets[1] \
                else half

            def one(i: int) -> None:
                out[i] = run_wrk(targets[i], payload, concurrency=each, duration=seconds,
                                 api_key=api_key)

            threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out

        load([urls[0], urls[1]], 2)  # warm both servers (connections, caches)
        time.sleep(2)
        for rnd in range(args.rounds):
            order = (1, 2) if rnd % 2 == 0 else (2, 1)
            for n in order:
                targets = [urls[0], urls[0]] if n == 1 else urls
                up0, cpu0 = upstream_count(fake_port), sum(cpu_seconds(p) for p in ps)
                pg0, commits0 = watch.cpu(), watch.commits()
                load_before = os.getloadavg()[0]
                watch.start()
                res = load(targets, args.duration)
                watch.stop()
                time.sleep(1.5)  # the last settlements, and the backends' statistics
                pg1, commits1 = watch.cpu(), watch.commits()
                cpu1, up1 = sum(cpu_seconds(p) for p in ps), upstream_count(fake_port)
                served = max(1, up1 - up0)
                pg_cpu = sum(c - pg0.get(pid, 0.0) for pid, c in pg1.items())
                requests = sum(r.requests for r in res)
                seconds = max(r.seconds for r in res)
                row = {"round": rnd + 1, "servers": n, "requests": requests,
                       "rps": requests / seconds, "served": served,
                       "errors": [r.errors for r in res],
                       "p50_ms": max(r.p50_ms for r in res),
                       "p99_ms": max(r.p99_ms for r in res),
                       "server_cpu_ms_per_req": (cpu1 - cpu0) * 1000 / served,
                       "pg_cpu_ms_per_req": pg_cpu * 1000 / served,
                       "pg_backends": len(pg1),
                       "commits_per_req": (commits1 - commits0) / served,
                       "lock_wait_share": watch.lock_waits / max(1, watch.busy),
                       "waits": dict(watch.waits), "load_before": load_before}
                results["rounds"].append(row)
                print(f"round {rnd + 1} servers={n}: {row['rps']:7.0f} req/s  server"
                      f" {row['server_cpu_ms_per_req']:.3f} ms/req  postgres"
                      f" {row['pg_cpu_ms_per_req']:.3f} ms/req"
                      f" {row['commits_per_req']:.2f} commits/req  lock waits"
                      f" {row['lock_wait_share']:.0%} of busy samples {row['waits']}",
                      flush=True)
                time.sleep(1)
        time.sleep(2)  # leases folded (a tick) before the counts
        for server in servers:
            server.terminate()  # a clean stop gives the leases back
        for server in servers:
            server.wait(30)
        verify = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", "ledger",
                                 "verify"], env=env, cwd=data_dir, capture_output=True,
                                text=True, timeout=300, check=False)
        results["ledger_verify"] = {"rc": verify.returncode,
                                    "output": (verify.stdout + verify.stderr).strip()}
        totals = counter.snapshot()
        results["totals"] = {**totals, "upstream": upstream_count(fake_port)}
        counter.close()
        for n in (1, 2):
            rows = [r for r in results["rounds"] if r["servers"] == n]
            results[f"median_{n}"] = {k: statistics.median(r[k] for r in rows) for k in
                                      ("rps", "server_cpu_ms_per_req", "pg_cpu_ms_per_req",
                                       "commits_per_req", "lock_wait_share", "p50_ms",
                                       "p99_ms")}
        print(json.dumps({k: results[k] for k in ("median_1", "median_2", "ledger_verify",
                                                   "totals")}, indent=2))
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        watch.engine.dispose()
        import shutil
        shutil.rmtree(data_dir, ignore_errors=True)
        admin(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results.get("ledger_verify", {}).get("rc") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
