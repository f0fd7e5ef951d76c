"""What the gateway benchmark reads from the server process and the database: peak RSS,
CPU time, system calls, and the rows that tie requests to charges."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
from sqlalchemy import create_engine, func, select


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
        # one statement: one snapshot of the database (separate queries, on PostgreSQL,
        # could count a charge in one and miss its usage row in the other, or the reverse)
        charges = (select(func.count()).select_from(self.ledger)
                   .where(self.ledger.c.kind == "charge").scalar_subquery())
        estimated = (select(func.count()).select_from(self.usage)
                     .where(self.usage.c.estimated.is_(True)).scalar_subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(self.usage.c.status, func.count(), charges, estimated)
                                .group_by(self.usage.c.status)).all()
        by_status = {row[0]: row[1] for row in rows}
        return {"charges": rows[0][2] if rows else 0, "usage": sum(by_status.values()),
                "estimated": rows[0][3] if rows else 0,
                **{f"status_{k}": v for k, v in by_status.items()}}

    def wait_settled(self, seconds: float = 30) -> int:
        """Wait until no hold is open and the counts stop moving (a request wrk cut off may
        still be reserving when the holds are first found at zero)."""
        deadline = time.monotonic() + seconds
        last = None
        while time.monotonic() < deadline:
            left, now = self.open_holds(), self.snapshot()
            if not left and now == last:
                return 0
            last = now
            time.sleep(0.3)
        return self.open_holds()

    def close(self) -> None:
        self.engine.dispose()


# ---- the server's own figures, from GET /metrics (histograms of its stages, the loop's lag)
STAGE_METRICS = {
    "reserve": ("minitoolai_chat_stage_seconds", 'stage="reserve"'),
    "settle": ("minitoolai_chat_stage_seconds", 'stage="settle"'),
    "relay": ("minitoolai_chat_stage_seconds", 'stage="relay"'),
    "upstream": ("minitoolai_upstream_duration_seconds", 'provider="openai"'),
    "ledger flush": ("minitoolai_ledger_flush_seconds", ""),
    "loop lag": ("minitoolai_event_loop_lag_seconds", ""),
    "gc": ("minitoolai_gc_pause_seconds", ""),
}


def scrape(port: int) -> dict:
    """The server's /metrics as {series text: value} (histogram buckets, counts, gauges)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                samples[name] = float(value)
            except ValueError:
                continue
    return samples


def _buckets(samples: dict, metric: str, labels: str) -> list[tuple[float, float]]:
    out = []
    for name, value in samples.items():
        if not name.startswith(metric + "_bucket{") or (labels and labels not in name):
            continue
        le = name.split('le="', 1)[1].split('"', 1)[0]
        out.append((float("inf") if le == "+Inf" else float(le), value))
    return sorted(out)


def stage_figures(before: dict, after: dict) -> dict:
    """Per stage, over one run: count, mean, p50, p99 (ms; p50/p99 are the upper bound of
    the histogram bucket they fall in), and the largest loop lag of the run."""
    figures = {}
    for stage, (metric, labels) in STAGE_METRICS.items():
        b0 = dict(_buckets(before, metric, labels))
        b1 = _buckets(after, metric, labels)
        cum = [(le, value - b0.get(le, 0.0)) for le, value in b1]
        total = cum[-1][1] if cum else 0
        if not total:
            continue
        sum_key = next((k for k in after if k.startswith(metric + "_sum")
                        and (not labels or labels in k)), None)
        mean = ((after.get(sum_key, 0) - before.get(sum_key, 0)) / total * 1000
                if sum_key else float("nan"))

        def quantile(q: float, cum=cum, total=total) -> float:
            for le, count in cum:
                if count >= q * total:
                    return le * 1000
            return float("inf")

        figures[stage] = {"count": int(total), "mean_ms": mean, "p50_ms": quantile(0.5),
                          "p99_ms": quantile(0.99),
                          "over_20ms": int(total - dict(cum).get(0.02, total))}
    # ops per group-committed ledger transaction: fewer commits per request, fewer WAL pages
    count_key, sum_key = "minitoolai_ledger_batch_size_count", "minitoolai_ledger_batch_size_sum"
    commits = after.get(count_key, 0) - before.get(count_key, 0)
    if commits:
        figures["ledger_batch_mean"] = (after.get(sum_key, 0) - before.get(sum_key, 0)) / commits
    figures["loop_lag_max_ms"] = after.get("minitoolai_event_loop_lag_max_seconds", 0) * 1000
    # the most CPU the loop's thread spent in one lag of the run: the code's own stall
    figures["loop_busy_max_ms"] = after.get("minitoolai_event_loop_busy_max_seconds", 0) * 1000
    return figures
