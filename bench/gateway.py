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
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select

from wrkrun import WrkResult, run_wrk, wrk_available

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
EMAIL = "bench@example.com"
PROMPT = "Which is the largest U.S. state by area? Answer in one short sentence."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str) -> str:
    # cwd: the data dir, so that `python -m` does not put the current directory (maybe a
    # checkout) ahead of PYTHONPATH
    proc = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                          cwd=env["MINITOOLAI_DATA_DIR"], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"minitoolai {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds}s")


def upstream_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        return json.loads(response.read())["requests"]


class MemorySampler(threading.Thread):
    """Peak RSS of a process (and its children), sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stopped = threading.Event()

    def rss(self) -> int:
        total = self.proc.memory_info().rss
        for child in self.proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            try:
                self.peak = max(self.peak, self.rss())
            except psutil.NoSuchProcess:
                return

    def vm_hwm(self) -> int:
        """The kernel's own high-water mark of the server's RSS (bytes), summed over the
        server and its worker processes."""
        total = 0
        for proc in [self.proc, *self.proc.children(recursive=True)]:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
        return total


class LedgerCounter:
    """Counts rows straight from the database, to tie requests to charges."""

    def __init__(self, database_url: str) -> None:
        from minitoolai.db.engine import sync_url
        from minitoolai.db.tables import holds, ledger_entries, usage

        self.engine = create_engine(sync_url(database_url))
        self.holds, self.ledger, self.usage = holds, ledger_entries, usage

    def open_holds(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(self.holds)).scalar_one()

    def snapshot(self) -> dict:
        with self.engine.connect() as conn:
            charges = conn.execute(select(func.count()).select_from(self.ledger)
                                   .where(self.ledger.c.kind == "charge")).scalar_one()
            by_status = dict(conn.execute(select(self.usage.c.status, func.count())
                                          .group_by(self.usage.c.status)).all())
            estimated = conn.execute(select(func.count()).select_from(self.usage)
                                     .where(self.usage.c.estimated.is_(True))).scalar_one()
        return {"charges": charges, "usage": sum(by_status.values()), "estimated": estimated,
                **{f"status_{k}": v for k, v in by_status.items()}}

    def wait_settled(self, seconds: float = 30) -> int:
        deadline = time.monotonic() + seconds
        while (left := self.open_holds()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def close(self) -> None:
        self.engine.dispose()


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


def fmt_row(cols, widths) -> str:
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(cols, widths)))


def postgres_admin(sql: str) -> None:
    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                           isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


def family(proc: psutil.Process) -> list[psutil.Process]:
    """The server and its children (uvicorn --workers N runs N children)."""
    return [proc, *proc.children(recursive=True)]


def cpu_seconds(proc: psutil.Process) -> float:
    total = 0.0
    for p in family(proc):
        t = p.cpu_times()
        total += t.user + t.system
    return total


def syscalls(proc: psutil.Process) -> tuple[int, int]:
    """read-like and write-like system calls so far (/proc/PID/io: syscr, syscw)."""
    reads = writes = 0
    for p in family(proc):
        io = p.io_counters()
        reads += io.read_count
        writes += io.write_count
    return reads, writes


def print_table(rows: list[dict]) -> None:
    head = ["run", "conc", "req/s", "p50 ms", "p99 ms", "errors", "gw/direct rps",
            "+p50 ms", "+p99 ms", "gw CPU ms/req", "gw rd/wr per req"]
    widths = [18, 4, 9, 8, 8, 6, 13, 8, 8, 13, 16]
    print(fmt_row(head, widths))
    print(fmt_row(["-" * w for w in widths], widths))
    for r in rows:
        extra = ["", "", "", "", ""]
        if r["target"] == "gateway" and r.get("direct"):
            d = r["direct"]
            extra = [f"{r['rps'] / d['rps']:.3f}" if d["rps"] else "-",
                     f"{r['p50_ms'] - d['p50_ms']:+.3f}", f"{r['p99_ms'] - d['p99_ms']:+.3f}",
                     f"{r['cpu_ms_per_req']:.3f}",
                     f"{r['reads_per_req']:.1f}/{r['writes_per_req']:.1f}"]
        print(fmt_row([f"{r['target']} {r['mode']}", r["concurrency"], f"{r['rps']:.0f}",
                       f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}", r["errors"], *extra],
                      widths))


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
    ap.add_argument("--json", type=Path, default=None, help="write all figures here")
    ap.add_argument("--profile", type=Path, default=None,
                    help="directory for py-spy raw profiles of the server, one per gateway run"
                         " (the figures of profiled runs include py-spy's overhead)")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--no-local-model", action="store_true",
                    help="MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL=false: do not load the built-in"
                         " GGUF model at start (it is idle here but counts in the RSS)")
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
        "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LOG_LEVEL": "warning",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "sk-bench",
    })
    pg_name = None
    if args.postgres and not args.database_url:
        pg_name = f"minitoolai_bench_{os.getpid()}"
        postgres_admin(f'CREATE DATABASE "{pg_name}"')
        args.database_url = f"postgresql://postgres@127.0.0.1:5432/{pg_name}"
    if args.no_local_model:
        env["MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL"] = "false"
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
                cpu0, sys0 = cpu_seconds(sampler.proc), syscalls(sampler.proc)
                gw = run_wrk(gw_url, body(stream, False), concurrency=conc,
                             duration=args.duration, api_key=api_key, threads=args.threads)
                if profiler is not None:
                    profiler.wait(60)
                left = counter.wait_settled()
                # the settlements of the last requests included
                cpu1, sys1 = cpu_seconds(sampler.proc), syscalls(sampler.proc)
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
        if not args.keep:
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


def report(results: dict, rows: list[dict]) -> None:
    m = results["machine"]
    print(f"\nmachine: {m['cpu']}, {m['nproc']} cores, {m['mem_total_gb']:.1f} GB;"
          f" python {m['python']}; load average at start {m['load_at_start']:.2f}")
    print(f"gateway: {results['package']} on {results['database']}, built-in local model"
          f" {'off' if results['config']['no_local_model'] else 'on (default)'},"
          f" {results['config']['workers']} worker process(es)")
    print_table(rows)
    print("\nledger (per gateway run: requests wrk completed / that reached the upstream /"
          " charges / usage records by status)")
    ok = True
    for r in rows:
        if r["target"] != "gateway":
            continue
        db = r["db"]
        statuses = ", ".join(f"{k[7:]} {v}" for k, v in sorted(db.items())
                             if k.startswith("status_") and v)
        # every request the gateway sent upstream is charged exactly once (a stream that wrk
        # cut at the end of its run is charged an estimate, marked estimated)
        match = db["charges"] == r["upstream_requests"] and r["open_holds_after"] == 0
        ok &= match and r["errors"] == 0
        print(f"  {r['mode']:8} c={r['concurrency']:<3} wrk {r['requests']:7}  upstream"
              f" {r['upstream_requests']:7}  charges {db['charges']:7}  usage {db['usage']:7}"
              f" ({statuses}; estimated {db['estimated']})  "
              f"{'OK' if match else 'MISMATCH'}")
    lv = results["ledger_verify"]
    print(f"ledger verify: rc={lv['rc']} {lv['output']}")
    peak = max(results["rss_peak_mb"], results["vm_hwm_mb"])
    print(f"server memory: idle {results['rss_idle_mb']:.1f} MB, after warm-up"
          f" {results['rss_after_warmup_mb']:.1f} MB, peak RSS {results['rss_peak_mb']:.1f} MB"
          f" (VmHWM {results['vm_hwm_mb']:.1f} MB)")
    targets = targets_met(rows, peak)
    for name, (value, met) in targets.items():
        print(f"target {name}: {value} -> {'met' if met else 'NOT met'}")
    results["targets"] = targets
    results["ok"] = ok and lv["rc"] == 0


def targets_met(rows: list[dict], peak_mb: float) -> dict:
    out = {}
    for r in rows:
        if r["target"] != "gateway":
            continue
        if r["concurrency"] == 1:
            added = r["p50_ms"] - r["direct"]["p50_ms"]
            out[f"added p50 at c=1 ({r['mode']}) < 1 ms"] = (f"{added:.3f} ms", added < 1.0)
        if r["mode"] == "stream" and r["concurrency"] == 32:
            out["stream req/s at c=32 >= 1000"] = (f"{r['rps']:.0f}", r["rps"] >= 1000)
    out["peak memory < 200 MB"] = (f"{peak_mb:.1f} MB", peak_mb < 200)
    return out


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               "unknown")
    return {"cpu": cpu, "nproc": os.cpu_count(),
            "mem_total_gb": psutil.virtual_memory().total / 2**30,
            "python": sys.version.split()[0], "load_at_start": os.getloadavg()[0]}


if __name__ == "__main__":
    sys.exit(main())
