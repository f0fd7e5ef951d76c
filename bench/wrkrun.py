"""Run wrk (Debian's `wrk` package) with a POST body and read its figures back as JSON.

wrk counts a request when the whole response has arrived: for a chunked (streamed)
response that is after the terminating zero-length chunk, so the latency it reports is
time to the end of the stream ([DONE] included), not time to first byte.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARK = "BENCHJSON "

# `done` runs once at the end; no per-request Lua callback, so wrk stays cheap.
LUA_TEMPLATE = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  io.write(string.format(
    '{mark}{{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%f,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def lua_string(text: str) -> str:
    """A Lua long-bracket string that cannot be closed by the text inside it."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict
    raw: str

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def wrk_available() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, body: bytes, *, concurrency: int, duration: float,
            api_key: str | None = None, threads: int = 1, timeout: float = 10.0,
            headers: dict[str, str] | None = None) -> WrkResult:
    lines = [f'wrk.headers["Authorization"] = {lua_string("Bearer " + api_key)}'] \
        if api_key else []
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}"
              for k, v in (headers or {}).items()]
    auth = "\n".join(lines)
    script = LUA_TEMPLATE.format(body=lua_string(body.decode()), auth=auth, mark=MARK)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        path = Path(handle.name)
    try:
        cmd = ["wrk", f"-t{min(threads, concurrency)}", f"-c{concurrency}",
               f"-d{max(1, round(duration))}s", f"--timeout={timeout:g}s", "-s", str(path), url]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                              timeout=duration + timeout + 30)
    finally:
        path.unlink(missing_ok=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip()}\n"
                           f"{proc.stdout.strip()}")
    data = json.loads(line[len(MARK):])
    seconds = data["duration_us"] / 1e6
    if seconds > duration * 1.1 + 1:
        # wrk times by the wall clock: a machine that stood still (a virtual machine paused
        # by its host: the kernel logs "crng reseeded due to virtual machine fork") makes the
        # requests in flight look that much slower, and counts them as timeouts past
        # --timeout (bench/RESULTS.md, issue 16 sixth pass)
        print(f"warning: wrk ran {seconds:.1f} s for -d {duration:g}: the machine stood still"
              " meanwhile (a paused VM?); this run's latencies and timeouts are not the"
              " system's: run it again", file=sys.stderr)
    errors = {k: data[k] for k in ("connect", "read", "write", "status", "timeout") if data[k]}
    return WrkResult(requests=data["requests"], seconds=seconds,
                     rps=data["requests"] / seconds if seconds else 0.0,
                     p50_ms=data["p50_us"] / 1000, p90_ms=data["p90_us"] / 1000,
                     p99_ms=data["p99_us"] / 1000, mean_ms=data["mean_us"] / 1000,
                     max_ms=data["max_us"] / 1000, errors=errors,
                     raw=proc.stdout)
