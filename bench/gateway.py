"""Benchmark of the chat gateway against the same upstream called directly.

One run, all on loopback:
  1. a fast fake OpenAI-compatible upstream (bench/fake_upstream.py) in its own process;
  2. `minitoolai serve` in a subprocess (fresh data dir, SQLite unless --database-url),
     OPENAI_BASE_URL pointing at the fake, no demo account, rate limit off;
  3. an account with $1,000,000 of credit and a key, made with the CLI;
  4. wrk against (a) the fake directly and (b) POST /api/chat-completions/ on the gateway
     (authentication, hold, settlement all on), streamed (20 chunks) and not, at each
     concurrency; the gateway's RSS sampled throughout;
  5. `minitoolai ledger verify`, and the charges, usage records and upstream requests counted
     and compared.

    python bench/gateway.py                         # 10 s per run, concurrency 1 and 32
    python bench/gateway.py -d 5 -c 1,8,32 --json out.json
    python bench/gateway.py --profile /tmp/prof     # py-spy on the server during each run

To measure a modified copy of the package, run with PYTHONPATH=/path/to/copy: the server and
the CLI are started with this interpreter and inherit the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from gateway_probe import LedgerCounter, MemorySampler, cpu_seconds, scrape, stage_figures, syscalls
from gateway_report import machine, report
from harness import cli as run_cli
from harness import free_port, wait_http
from sqlalchemy import create_engine
from wrkrun import WrkResult, run_wrk, wrk_available

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
EMAIL = "bench@example.com"
PROMPT = "Which is the largest U.S. state by area? Answer in one short sentence."


def cli(env: dict, *args: str) -> str:
    # cwd: the data dir, so that `python -m` does not put the current directory (maybe a
    # checkout) ahead of PYTHONPATH
    return run_cli(env, *args, cwd=env["MINITOOLAI_DATA_DIR"], timeout=120)


def upstream_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return json.loads(response.read())["requests"]


def body(stream: bool, direct: bool) -> bytes:
    obj = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if direct and stream:
        obj["stream_options"] = {"include_usage": True}  # what the gateway asks upstream for
    return json.dumps(obj, separators=(",", ":")).encode()


def start_profiler(pid: int, seconds: float, path: Path) -> subprocess.Popen:
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration",
                             str(max(1, round(seconds))), "--rate", "250", "--nonblocking", "--gil",
                             "--format", "raw", "--output", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def postgres_admin(sql: str) -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                           isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


def main() -> int:
    ap = argparse.ArgumentParser(description="gateway vs direct upstream, with wrk")
    ap.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per wrk run")
    ap.add_argument("-c", "--concurrency", default="1,32", help="comma-separated list")
    ap.add_argument("--modes", default="stream,nostream", help="stream,nostream")
    ap.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of gateway warm-up")
    ap.add_argument("--database-url", default=None,
                    help="postgresql://... (an empty database); default SQLite in a temp dir")
    ap.add_argument("--postgres", action="store_true",
                    help="create a fresh database on the PostgreSQL at 127.0.0.1:5432 (user"
                         " postgres), run against it, drop it after")
    ap.add_argument("--workers", type=int, default=1,
                    help="`serve --workers N` (memory and CPU then sum all the processes)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting for the server (the caller's MINITOOLAI_ variables are"
                         " not passed on), e.g. MINITOOLAI_LEASES__SIZE=1")
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    ap.add_argument("--profile", type=Path, default=None,
                    help="directory for py-spy raw profiles of the server, one per gateway run"
                         " (the figures of profiled runs include py-spy's overhead)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--loop-monitor-ms", type=float, default=5.0,
                    help="the server's loop_monitor_interval_ms (0: off)")
    ap.add_argument("--log-level", default="warning",
                    help="the server's log_level (info: one access line per request)")
    ap.add_argument("--no-local-model", action="store_true",
                    help="a relay-only server: MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL=false and"
                         " MINITOOLAI_SPEECH__ESPEAK=false, no in-process model or engine"
                         " (idle here, but the built-in GGUF and PyAV count in the RSS)")
    args = ap.parse_args()
    if not wrk_available():
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]

    data_dir = Path(tempfile.mkdtemp(prefix="minitoolai-bench-"))
    fake_port, gw_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINITOOLAI_") and not k.startswith("OPENAI_")}
    env.update({
        "MINITOOLAI_DATA_DIR": str(data_dir), "MINITOOLAI_HOST": "127.0.0.1",
        "MINITOOLAI_PORT": str(gw_port), "MINITOOLAI_DEMO_ACCOUNT": "false",
        "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LOG_LEVEL": args.log_level,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "sk-bench",
    })
    env.update(item.split("=", 1) for item in args.env)
    if args.loop_monitor_ms:  # the stall monitor: each run's largest event-loop lag (/metrics)
        env["MINITOOLAI_LOOP_MONITOR_INTERVAL_MS"] = str(args.loop_monitor_ms)
    pg_name = None
    if args.postgres and not args.database_url:
        pg_name = f"minitoolai_bench_{os.getpid()}"
        postgres_admin(f'CREATE DATABASE "{pg_name}"')
        args.database_url = f"postgresql://postgres@127.0.0.1:5432/{pg_name}"
    if args.no_local_model:
        env["MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL"] = "false"
        env["MINITOOLAI_SPEECH__ESPEAK"] = "false"
    if args.database_url:
        env["MINITOOLAI_DATABASE_URL"] = args.database_url
    database_url = args.database_url or f"sqlite:///{data_dir / 'minitoolai.sqlite3'}"
    procs: list[subprocess.Popen] = []
    import minitoolai
    results: dict = {"runs": [], "machine": machine(), "argv": sys.argv,
                     "config": vars(args), "package": str(Path(minitoolai.__file__).parent),
                     "database": "postgresql" if args.database_url else "sqlite"}
    try:
        fake = subprocess.Popen([sys.executable, str(HERE / "fake_upstream.py"), "--port",
                                 str(fake_port), "--chunks", str(args.chunks)],
                                stdout=subprocess.DEVNULL)
        procs.append(fake)
        wait_http(f"http://127.0.0.1:{fake_port}/stats", fake)

        cli(env, "db", "upgrade")
        cli(env, "accounts", "create", EMAIL, "--name", "bench", "--credit", "1000000")
        api_key = cli(env, "keys", "create", EMAIL, "--name", "bench").strip().splitlines()[-1]

        server = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve",
                                   "--workers", str(args.workers)],
                                  env=env, cwd=data_dir, stdout=subprocess.DEVNULL)
        procs.append(server)
        wait_http(f"http://127.0.0.1:{gw_port}/health", server)
        sampler = MemorySampler(server.pid)
        results["rss_idle_mb"] = sampler.rss() / 2**20
        sampler.start()
        counter = LedgerCounter(database_url)
        gw_url = f"http://127.0.0.1:{gw_port}/api/chat-completions/"
        direct_url = f"http://127.0.0.1:{fake_port}/v1/chat/completions"

        if args.warmup:
            for mode in modes:
                run_wrk(gw_url, body(mode == "stream", False), concurrency=max(concurrencies),
                        duration=args.warmup, api_key=api_key, threads=args.threads)
            counter.wait_settled()
        results["rss_after_warmup_mb"] = sampler.rss() / 2**20

        rows = []
        for mode in modes:
            stream = mode == "stream"
            for conc in concurrencies:
                direct = run_wrk(direct_url, body(stream, True), concurrency=conc,
                                 duration=args.duration, threads=args.threads)
                rows.append(row("direct", mode, conc, direct))
                before, up_before = counter.snapshot(), upstream_count(fake_port)
                profiler = None
                if args.profile:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    profiler = start_profiler(server.pid, args.duration,
                                              args.profile / f"gateway-{mode}-c{conc}.txt")
                load = os.getloadavg()[0]
                metrics0 = scrape(gw_port)  # also starts the run's largest loop lag afresh
                cpu0, sys0 = cpu_seconds(sampler.proc), syscalls(sampler.proc)
                gw = run_wrk(gw_url, body(stream, False), concurrency=conc,
                             duration=args.duration, api_key=api_key, threads=args.threads)
                if profiler is not None:
                    profiler.wait(60)
                left = counter.wait_settled()
                # the settlements of the last requests included
                cpu1, sys1 = cpu_seconds(sampler.proc), syscalls(sampler.proc)
                stages = stage_figures(metrics0, scrape(gw_port))
                after, up_after = counter.snapshot(), upstream_count(fake_port)
                r = row("gateway", mode, conc, gw)
                r["direct"] = rows[-1]
                r["load_before"] = load
                r["server_cpu_s"] = cpu1 - cpu0
                r["open_holds_after"] = left
                r["upstream_requests"] = up_after - up_before
                # CPU time is what the gateway costs whatever else runs on the machine
                served = max(1, r["upstream_requests"])
                r["cpu_ms_per_req"] = r["server_cpu_s"] * 1000 / served
                r["reads_per_req"] = (sys1[0] - sys0[0]) / served
                r["writes_per_req"] = (sys1[1] - sys0[1]) / served
                r["db"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
                r["rss_peak_so_far_mb"] = sampler.peak / 2**20
                r["stages"] = stages
                rows.append(r)
                print(f"  {mode:8} c={conc:<3} direct {direct.rps:8.0f} req/s p50"
                      f" {direct.p50_ms:.3f} ms | gateway {gw.rps:8.0f} req/s p50"
                      f" {gw.p50_ms:.3f} ms p99 {gw.p99_ms:.3f} ms", flush=True)

        sampler.stopped.set()
        sampler.join()
        results["rss_peak_mb"] = sampler.peak / 2**20
        results["vm_hwm_mb"] = sampler.vm_hwm() / 2**20
        verify = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", "ledger",
                                 "verify"], env=env, cwd=data_dir, capture_output=True,
                                text=True, timeout=300)
        results["ledger_verify"] = {"rc": verify.returncode,
                                    "output": (verify.stdout + verify.stderr).strip()}
        results["totals"] = counter.snapshot()
        results["upstream_total"] = upstream_count(fake_port)
        counter.close()
        results["runs"] = rows
        report(results, rows)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if args.keep:
            print(f"data directory kept: {data_dir}")
        else:
            import shutil
            shutil.rmtree(data_dir, ignore_errors=True)
            if pg_name:
                postgres_admin(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0 if results.get("ledger_verify", {}).get("rc") == 0 and results["ok"] else 1


def row(target: str, mode: str, conc: int, res: WrkResult) -> dict:
    return {"target": target, "mode": mode, "concurrency": conc, "requests": res.requests,
            "seconds": res.seconds, "rps": res.rps, "p50_ms": res.p50_ms,
            "p90_ms": res.p90_ms, "p99_ms": res.p99_ms, "mean_ms": res.mean_ms,
            "max_ms": res.max_ms, "errors": res.error_count, "error_kinds": res.errors}


if __name__ == "__main__":
    sys.exit(main())
