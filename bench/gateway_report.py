"""The gateway benchmark's printed report: the table, the ledger cross-check, the targets."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psutil


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               "unknown")
    return {"cpu": cpu, "nproc": os.cpu_count(),
            "mem_total_gb": psutil.virtual_memory().total / 2**30,
            "python": sys.version.split()[0], "load_at_start": os.getloadavg()[0]}


def fmt_row(cols, widths) -> str:
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(cols, widths)))


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
    print("\nthe server's stages (from its /metrics; ms, p50/p99 to the histogram's bucket):")
    for r in rows:
        stages = r.get("stages")
        if r["target"] != "gateway" or not any(isinstance(v, dict)
                                               for v in (stages or {}).values()):
            continue  # a server without these metrics (an older commit)
        parts = [f"{name} {f['mean_ms']:.2f} mean, p50<={f['p50_ms']:g}, p99<={f['p99_ms']:g}"
                 for name, f in stages.items() if isinstance(f, dict) and name != "loop lag"]
        gc_f = stages.get("gc")
        if gc_f:
            parts[-1] += f" ({gc_f['count']} collections)"
        lag = stages.get("loop lag")
        lag_text = (f"; loop lag p99<={lag['p99_ms']:g}, {lag['over_20ms']} of {lag['count']}"
                    f" wake-ups over 20 ms" if lag else "")
        print(f"  {r['mode']:8} c={r['concurrency']:<3} " + "; ".join(parts)
              + f"{lag_text}; largest loop stall {stages['loop_lag_max_ms']:.1f} ms, largest"
              f" on CPU (the code's own) {stages.get('loop_busy_max_ms', 0):.1f} ms"
              + (f"; {stages['ledger_batch_mean']:.1f} ledger ops per commit"
                 if "ledger_batch_mean" in stages else ""))
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
