"""Side by side, in one run: the bare upstream, nginx as a reference relay, this project, and
the OpenAI-compatible gateways that install here, all relaying one fast fake upstream.

Every system relays `POST /v1/chat/completions` for `gpt-4o-mini` to bench/fake_upstream.py
(20 content chunks, a finish chunk, the usage chunk, `[DONE]`; or one `chat.completion`),
under the same wrk settings (one thread, `-c` connections, `-d` seconds), streamed and not.
Before it is measured, each is checked to relay a stream whole: its answer must hold the
usage chunk (`"usage":{..."prompt_tokens"...}`) and `data: [DONE]`. A system that is not
installed, does not start or fails that check is reported as such and skipped.

Columns: wrk's requests/s, p50 and p99 (to the end of the stream); the CPU time (user +
system) of the system's processes (all of them: nginx's workers, uvicorn's) over the wrk
run divided by the requests wrk completed; the peak RSS of those processes (sampled every
20 ms from start to stop, summed over the processes), plus the load average at the start of
each run. On a shared machine CPU ms/req is the column to compare; req/s and latencies move
with the neighbours.

The systems and how to install them (none is a dependency of this project; each lives in
its own prefix under /tmp):

- nginx: `apt-get install -y nginx-light wrk` (run here as our own process on a free port
  with our own configuration file; the system's service is never used). It checks the
  Authorization header against one static key and proxies with `proxy_buffering off`.
- the Python floor: bench/floor_relay.py, this project's own parts (uvicorn, uvloop,
  httptools, the gateway's own upstream client) relaying bytes and nothing else, nothing beyond
  this project's: what the gateway cannot go under on these parts.
- this project: `minitoolai serve` from this checkout (PYTHONPATH decides which package),
  SQLite, an account and key made with the CLI, rate limit off, relay only (no built-in
  model or speech engine); authentication, hold, relay and settlement all on, log level
  warning (no access line). Three times: as configured by default (a hold row per request),
  `minitoolai-leased` with `leases.size` = $1 (holds served from a credit lease,
  ledger/leases.py), and `minitoolai-leased-logged`, the same at the default log level
  (info: an access line per request, written to a file).
- LiteLLM proxy: `python3 -m venv /tmp/venv-litellm && /tmp/venv-litellm/bin/pip install
  'litellm[proxy]'`; a config with one model (`openai/gpt-4o-mini` at the fake) and a
  master key, no database.
- Portkey gateway: `mkdir -p /tmp/portkey && cd /tmp/portkey && npm install
  @portkey-ai/gateway`; `node build/start-server.js --port=P --headless`, routed with the
  `x-portkey-provider: openai` and `x-portkey-custom-host` headers. As installed, 1.15.2
  fails every request on Node 20 (Portkey-AI/gateway#1389); the run uses a copy of its
  build with the fix of PR #1390 (see `portkey_build`). The recorded run also had the
  workaround that issue names: `@hono/node-server` pinned to 1.14.2 (an npm `overrides`
  entry in /tmp/portkey/package.json, and the gateway's nested 1.19 copy removed).
- openai-forward: `python3 -m venv /tmp/venv-oaif && /tmp/venv-oaif/bin/pip install
  openai-forward pyyaml`; `aifd run --port P` with FORWARD_CONFIG at the fake.

    python bench/sidebyside.py                         # 8 s per run, c=32, both modes
    python bench/sidebyside.py -d 8 -c 32 --only bare,nginx,minitoolai --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from gateway_probe import MemorySampler, cpu_seconds
from harness import cli as run_cli
from harness import free_port
from wrkrun import run_wrk, wrk_available

HERE = Path(__file__).resolve().parent
MODEL = "gpt-4o-mini"
PROMPT = "Which is the largest U.S. state by area? Answer in one short sentence."
LITELLM = Path(os.environ.get("BENCH_LITELLM", "/tmp/venv-litellm/bin/litellm"))
AIFD = Path(os.environ.get("BENCH_AIFD", "/tmp/venv-oaif/bin/aifd"))
PORTKEY = Path(os.environ.get(
    "BENCH_PORTKEY", "/tmp/portkey/node_modules/@portkey-ai/gateway/build/start-server.js"))


def body(stream: bool) -> bytes:
    obj = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": stream}
    if stream:
        obj["stream_options"] = {"include_usage": True}
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class System:
    name: str
    version: str = ""
    url: str = ""
    api_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    note: str = ""


def wait_port(port: int, proc: subprocess.Popen, seconds: float = 90) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not open after {seconds:g} s")


def post(system: System, stream: bool, timeout: float = 30) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json", **system.headers}
    if system.api_key:
        headers["Authorization"] = f"Bearer {system.api_key}"
    req = urllib.request.Request(system.url, data=body(stream), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def verify(system: System, seconds: float = 60) -> None:
    """The stream must arrive whole, usage chunk and [DONE] included; the plain answer must
    carry its usage. Retried while the system finishes starting."""
    deadline = time.monotonic() + seconds
    problem = ""
    while time.monotonic() < deadline:
        try:
            status, data = post(system, True)
            usage_chunk = any(b'"usage":{' in line.replace(b" ", b"") and b"prompt_tokens" in line
                              for line in data.split(b"\n") if line.startswith(b"data:"))
            if status == 200 and usage_chunk and b"data: [DONE]" in data:
                status, data = post(system, False)
                if status == 200 and b"prompt_tokens" in data:
                    return
                problem = f"not streamed: HTTP {status} {data[:200]!r}"
            else:
                problem = f"streamed: HTTP {status}, usage chunk {usage_chunk}, {data[-300:]!r}"
        except OSError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(f"does not relay the stream whole: {problem}")


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def version_of(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                             check=False)
        return (out.stdout + out.stderr).strip().splitlines()[-1]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


# ---- each system: start it, return how to call it -------------------------------------------
def start_bare(fake_port: int, work: Path) -> System:
    return System("bare fake upstream (the floor)", "bench/fake_upstream.py",
                  f"http://127.0.0.1:{fake_port}/v1/chat/completions")


def start_nginx(fake_port: int, work: Path) -> System:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise FileNotFoundError("nginx: apt-get install -y nginx-light")
    port, key = free_port(), "sk-nginx-bench"
    prefix = work / "nginx"
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    temp = "\n".join(f"  {kind}_temp_path {prefix}/tmp/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  upstream fake {{ server 127.0.0.1:{fake_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location = /v1/chat/completions {{
      if ($http_authorization != "Bearer {key}") {{ return 401; }}
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return System("nginx reverse proxy, static key check",
                  version_of([nginx, "-v"]).rpartition("/")[2],
                  f"http://127.0.0.1:{port}/v1/chat/completions", key, proc=proc)


def start_floor(fake_port: int, work: Path, server: str = "uvicorn",
                client: str = "minitoolai") -> System:
    """The Python floor (bench/floor_relay.py); on other parts than the project's own, with
    the interpreter BENCH_FLOOR_PYTHON names (a venv that has them), else this one."""
    port, key = free_port(), "sk-floor-bench"
    python = sys.executable if server == "uvicorn" and client in ("aiohttp", "minitoolai") \
        else os.environ.get("BENCH_FLOOR_PYTHON", sys.executable)
    proc = subprocess.Popen([python, str(HERE / "floor_relay.py"), "--port", str(port),
                             "--upstream", f"http://127.0.0.1:{fake_port}", "--key", key,
                             "--server", server, "--client", client],
                            stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    print_versions = ("import importlib.metadata as m, sys;"
                      " print(', '.join(f'{n} {m.version(n)}' for n in sys.argv[1:]))")
    versions = subprocess.run(
        [python, "-c", print_versions, server, client],
        capture_output=True, text=True, check=False).stdout.strip()
    return System(f"Python floor: {server} + {client}, relay only (bench/floor_relay.py)",
                  versions, f"http://127.0.0.1:{port}/v1/chat/completions", key, proc=proc)


def start_minitoolai(fake_port: int, work: Path, leases: str = "0",
                     log_level: str = "warning") -> System:
    data = work / f"minitoolai-leases-{leases}-{log_level}"
    data.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MINITOOLAI_") and not k.startswith("OPENAI_")}
    env.update({
        "MINITOOLAI_DATA_DIR": str(data), "MINITOOLAI_HOST": "127.0.0.1",
        "MINITOOLAI_PORT": str(port), "MINITOOLAI_DEMO_ACCOUNT": "false",
        "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "0", "MINITOOLAI_LOG_LEVEL": log_level,
        "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false", "MINITOOLAI_SPEECH__ESPEAK": "false",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1", "OPENAI_API_KEY": "sk-bench",
        "MINITOOLAI_LEASES__SIZE": leases,
    })
    run_cli(env, "db", "upgrade", cwd=data)
    run_cli(env, "accounts", "create", "bench@example.com", "--name", "bench", "--credit",
            "1000000", cwd=data)
    key = run_cli(env, "keys", "create", "bench@example.com", "--name", "bench",
                  cwd=data).strip().splitlines()[-1]
    # the server's log (at info, one access line per request) to a file, as an operator keeps it
    proc = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve"], env=env,
                            cwd=data, stdout=subprocess.DEVNULL,
                            stderr=(data / "server.log").open("w"))
    wait_port(port, proc)
    import minitoolai

    commit = subprocess.run(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    how = "hold" if leases == "0" else f"hold from a ${leases} credit lease"
    if log_level == "info":
        how += ", an access line per request"
    return System(f"this project (auth, {how}, settle on SQLite)",
                  f"{minitoolai.__version__} at {commit}",
                  f"http://127.0.0.1:{port}/v1/chat/completions", key, proc=proc)


def start_litellm(fake_port: int, work: Path) -> System:
    if not LITELLM.exists():
        raise FileNotFoundError(f"{LITELLM}: python3 -m venv /tmp/venv-litellm &&"
                                " /tmp/venv-litellm/bin/pip install 'litellm[proxy]'")
    port, key = free_port(), "sk-litellm-bench"
    conf = work / "litellm.yaml"
    conf.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: http://127.0.0.1:{fake_port}/v1
      api_key: sk-bench
general_settings:
  master_key: {key}
litellm_settings:
  drop_params: true
""")
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION",
           "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True"}
    proc = subprocess.Popen([str(LITELLM), "--config", str(conf), "--port", str(port),
                             "--host", "127.0.0.1", "--num_workers", "1"], env=env, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, 180)
    pip = LITELLM.parent / "pip"
    version = version_of([str(pip), "show", "litellm"]) if pip.exists() else "?"
    version = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
        [str(pip), "show", "litellm"], capture_output=True, text=True, check=False).stdout.splitlines()
        if ln.startswith("Version:")), version)
    return System("LiteLLM proxy", version, f"http://127.0.0.1:{port}/v1/chat/completions",
                  key, proc=proc)


# Portkey 1.15.2 answers every chat completion on Node 20 with a 500 ("TypeError: immutable":
# it adds headers to the upstream's fetch Response, whose headers are immutable;
# Portkey-AI/gateway#1389). The fix of its PR #1390, applied to a copy of the build next to
# the original (same module resolution): re-wrap the Response before adding headers.
PORTKEY_BUG = "updateHeaders(e,t,a){return e.headers.append("
PORTKEY_FIX = ("updateHeaders(e,t,a){e=new Response(e.body,{status:e.status,statusText:"
               "e.statusText,headers:new Headers(e.headers)});return e.headers.append(")
PORTKEY_CALL = "this.updateHeaders(i,n.cacheStatus,o),{response:i"
PORTKEY_CALL_FIX = "i=this.updateHeaders(i,n.cacheStatus,o),{response:i"


def portkey_build() -> Path:
    text = PORTKEY.read_text()
    if PORTKEY_BUG not in text or PORTKEY_CALL not in text:
        return PORTKEY  # another version: run it as installed
    patched = PORTKEY.with_name("start-server-bench.js")
    patched.write_text(text.replace(PORTKEY_BUG, PORTKEY_FIX)
                       .replace(PORTKEY_CALL, PORTKEY_CALL_FIX))
    return patched


def start_portkey(fake_port: int, work: Path) -> System:
    node = shutil.which("node")
    if not PORTKEY.exists() or node is None:
        raise FileNotFoundError(f"{PORTKEY}: cd /tmp/portkey && npm install @portkey-ai/gateway")
    port = free_port()
    proc = subprocess.Popen([node, str(portkey_build()), f"--port={port}", "--headless"],
                            env={**os.environ, "NODE_ENV": "production"}, cwd=work,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    package = json.loads((PORTKEY.parent.parent / "package.json").read_text())
    return System("Portkey gateway (Node)", f"{package['version']}, node {version_of([node, '-v'])}",
                  f"http://127.0.0.1:{port}/v1/chat/completions", "sk-bench",
                  {"x-portkey-provider": "openai",
                   "x-portkey-custom-host": f"http://127.0.0.1:{fake_port}/v1"}, proc=proc)


def start_openai_forward(fake_port: int, work: Path) -> System:
    if not AIFD.exists():
        raise FileNotFoundError(f"{AIFD}: python3 -m venv /tmp/venv-oaif &&"
                                " /tmp/venv-oaif/bin/pip install openai-forward pyyaml")
    port = free_port()
    (work / "oaif").mkdir()
    env = {**os.environ, "FORWARD_CONFIG": json.dumps(
        [{"base_url": f"http://127.0.0.1:{fake_port}", "route": "/", "type": "openai"}])}
    proc = subprocess.Popen([str(AIFD), "run", "--port", str(port)], env=env,
                            cwd=work / "oaif", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    pip = AIFD.parent / "pip"
    version = next((ln.split(":", 1)[1].strip() for ln in subprocess.run(
        [str(pip), "show", "openai-forward"], capture_output=True, text=True,
        check=False).stdout.splitlines()
        if ln.startswith("Version:")), "?")
    return System("openai-forward (Python)", version,
                  f"http://127.0.0.1:{port}/v1/chat/completions", "sk-bench", proc=proc)


SYSTEMS = {"bare": start_bare, "nginx": start_nginx, "python-floor": start_floor,
           "minitoolai": start_minitoolai,
           "minitoolai-leased": lambda port, work: start_minitoolai(port, work, leases="1"),
           # the same with the default log level (info): what the access log costs
           "minitoolai-leased-logged": lambda port, work: start_minitoolai(
               port, work, leases="1", log_level="info"),
           "portkey": start_portkey, "openai-forward": start_openai_forward,
           "litellm": start_litellm}
# the floor on other parts (not run unless named in --only; see bench/floor_relay.py)
FLOOR_VARIANTS = {
    "floor-granian": lambda port, work: start_floor(port, work, server="granian"),
    "floor-aiohttp": lambda port, work: start_floor(port, work, client="aiohttp"),
    "floor-pyreqwest": lambda port, work: start_floor(port, work, client="pyreqwest"),
    "floor-aiosonic": lambda port, work: start_floor(port, work, client="aiosonic"),
}


def measure(system: System, fake_pid: int, modes: list[str], conc: int, duration: float,
            warmup: float) -> list[dict]:
    # the bare upstream's own CPU and memory; for the others, theirs only
    pid = system.proc.pid if system.proc else fake_pid
    sampler = MemorySampler(pid)
    sampler.start()
    rows = []
    try:
        for mode in modes:
            stream = mode == "stream"
            if warmup:
                run_wrk(system.url, body(stream), concurrency=conc, duration=warmup,
                        api_key=system.api_key, headers=system.headers)
            load = os.getloadavg()[0]
            cpu0 = cpu_seconds(sampler.proc)
            res = run_wrk(system.url, body(stream), concurrency=conc, duration=duration,
                          api_key=system.api_key, headers=system.headers)
            time.sleep(0.3)  # what it does after the last response (a settlement) counts too
            cpu = cpu_seconds(sampler.proc) - cpu0
            rows.append({"system": system.name, "version": system.version, "mode": mode,
                         "concurrency": conc, "rps": res.rps, "p50_ms": res.p50_ms,
                         "p99_ms": res.p99_ms, "requests": res.requests,
                         "errors": res.error_count, "error_kinds": res.errors,
                         "cpu_ms_per_req": cpu * 1000 / max(1, res.requests),
                         "load": load})
            print(f"  {system.name[:38]:38} {mode:8} {res.rps:9.0f} req/s  p50 {res.p50_ms:8.2f}"
                  f"  p99 {res.p99_ms:8.2f} ms  CPU {rows[-1]['cpu_ms_per_req']:.3f} ms/req"
                  f"  errors {res.error_count} {res.errors or ''}  load {load:.1f}", flush=True)
    finally:
        sampler.stopped.set()
        sampler.join()
    peak = sampler.peak / 2**20
    for r in rows:
        r["peak_rss_mb"] = peak
    return rows


def table(rows: list[dict], modes: list[str]) -> str:
    head = "| system | version |"
    rule = "|---|---|"
    for mode in modes:
        head += f" {mode} req/s | p50 ms | p99 ms | CPU ms/req |"
        rule += "---:|---:|---:|---:|"
    head += " peak RSS MB |"
    rule += "---:|"
    lines = [head, rule]
    for name in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == name]
        line = f"| {name} | {mine[0]['version']} |"
        for mode in modes:
            r = next((r for r in mine if r["mode"] == mode), None)
            if r is None or not r["requests"]:
                line += " - | - | - | - |"
                continue
            flag = f" ({r['errors']} errors)" if r["errors"] else ""
            line += (f" {r['rps']:,.0f}{flag} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
                     f" {r['cpu_ms_per_req']:.3f} |")
        line += f" {max(r['peak_rss_mb'] for r in mine):.0f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", "--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("-c", "--concurrency", type=int, default=32)
    ap.add_argument("--modes", default="stream,nostream")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per mode")
    ap.add_argument("--only", default=",".join(SYSTEMS),
                    help="comma-separated: " + ",".join([*SYSTEMS, *FLOOR_VARIANTS]))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if not wrk_available():
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    modes = [m.strip() for m in args.modes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-sidebyside-"))
    fake_port = free_port()
    fake = subprocess.Popen([sys.executable, str(HERE / "fake_upstream.py"), "--port",
                             str(fake_port)], stdout=subprocess.DEVNULL)
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), "?")
    print(f"machine: {cpu_name}, {os.cpu_count()} cores,"
          f" {psutil.virtual_memory().total / 2**30:.1f} GB; load {os.getloadavg()}; wrk -t1"
          f" -c{args.concurrency} -d{args.duration:g}s", flush=True)
    try:
        wait_port(fake_port, fake)
        for key in [k.strip() for k in args.only.split(",")]:
            system = None
            try:
                system = {**SYSTEMS, **FLOOR_VARIANTS}[key](fake_port, work)
                verify(system)
                print(f"{key}: {system.version}: relays the stream with its usage chunk",
                      flush=True)
                rows += measure(system, fake.pid, modes, args.concurrency, args.duration,
                                args.warmup)
            except Exception as exc:  # noqa: BLE001 - a competitor that fails is reported
                skipped[key] = f"{type(exc).__name__}: {exc}"
                print(f"{key}: skipped: {skipped[key]}", flush=True)
            finally:
                stop(system.proc if system else None)
    finally:
        stop(fake)
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows, modes))
    for key, why in skipped.items():
        print(f"\nskipped {key}: {why}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "skipped": skipped,
                                         "argv": sys.argv}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
