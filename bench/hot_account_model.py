"""A discrete-event model of N server processes serving one account on one PostgreSQL:
every hold and settlement on the account's row (main before credit leases) against holds
served from per-process credit leases (ledger/leases.py).

What it models (times in milliseconds):
- each server process has one core: a request costs it `server_cpu` of CPU (0.6 before its
  hold, 0.4 after the upstream answers), served first come, first served;
- the upstream answers after `upstream` ms (the fake upstream's stream: no CPU here);
- each process group-commits its ledger ops (db/tx.py GroupCommit): one transaction at a
  time, holding everything queued meanwhile; a transaction of k statements changing r rows
  takes k * `stmt` + `commit` ms (round trips, then the WAL flush), and costs PostgreSQL
  k * `stmt_cpu` + r * `row_cpu` + `commit_cpu` ms of CPU;
- a transaction that touches the account's row holds its lock from its first statement to
  its commit: such transactions of all processes queue for the row, first come, first
  served, plus `handoff` ms to wake the next waiter (a `Lock:transactionid` wait);
- without leases: a request's hold (3 rows: account, key, hold) and its settlement (5 rows:
  hold, account, key, ledger entry, usage) are one statement each, both on the row; with
  leases: the hold is taken in memory, the settlements of one transaction are 1 statement
  in all (it locks their lease rows and writes 2 rows per request, the lease row once), on
  the process's own lease row (no wait on anyone), and the account's
  row is taken only by each process's fold every `tick` ms (3 statements) and by a top-up
  every `lease_holds` requests (4 statements);
- PostgreSQL has `pg_cores` cores: the model reports the CPU it needs and caps the
  throughput where it would need more;
- the load is closed: `conns` connections per server, each sending its next request when
  the last one is answered.

Not modelled: the network, the load generator's and the upstream's own CPU (on this 2-core
machine they share the cores with everything else, which is why the measured figures in
bench/RESULTS.md are lower), checkpoints, autovacuum.

The defaults are this machine's measured orders of magnitude (bench/RESULTS.md): about
0.4 ms of server CPU per request, ~0.1 ms per statement round trip on loopback, a WAL
flush ~0.5 ms; the CPU costs are set so that one server's PostgreSQL CPU per request comes
out near the measured (0.23 ms without leases, 0.055 ms with).

    python bench/hot_account_model.py                 # N = 1, 2, 4, 8, 16
    python bench/hot_account_model.py --commit 2      # a slower disk
"""

from __future__ import annotations

import argparse
import heapq
import itertools
from collections import deque
from dataclasses import dataclass


@dataclass
class Params:
    server_cpu: float = 0.40
    upstream: float = 3.0
    stmt: float = 0.10
    stmt_cpu: float = 0.03
    row_cpu: float = 0.015
    commit: float = 0.5
    commit_cpu: float = 0.02
    handoff: float = 0.05
    tick: float = 1000.0
    lease_holds: int = 1000  # requests served per top-up (lease size / hold)
    conns: int = 32
    pg_cores: int = 16
    seconds: float = 5.0


class Sim:
    def __init__(self, n: int, leases: bool, p: Params) -> None:
        self.n, self.leases, self.p = n, leases, p
        self.now = 0.0
        self.events: list = []
        self.seq = itertools.count()
        self.cpu_free = [0.0] * n  # when each server's core is next free
        self.queue: list[list] = [[] for _ in range(n)]  # ledger ops waiting, per server
        self.flushing = [False] * n
        self.row_busy = False
        self.row_waiters: deque = deque()
        self.done = 0
        self.pg_cpu = 0.0
        self.row_held = 0.0
        self.row_waits = 0
        self.served_since_topup = [0] * n

    def at(self, t: float, fn, *args) -> None:
        heapq.heappush(self.events, (t, next(self.seq), fn, args))

    # ---- a request ----------------------------------------------------------------------
    def start(self, s: int) -> None:
        self.cpu(s, 0.6 * self.p.server_cpu, self.reserve, s)

    def cpu(self, s: int, cost: float, then, *args) -> None:
        begin = max(self.now, self.cpu_free[s])
        self.cpu_free[s] = begin + cost
        self.at(begin + cost, then, *args)

    def reserve(self, s: int) -> None:
        if not self.leases:
            self.submit(s, ("row", 1, 3), self.upstream, s)
            return
        self.served_since_topup[s] += 1
        if self.served_since_topup[s] >= self.p.lease_holds:  # the lease runs low: top up
            self.served_since_topup[s] = 0
            self.submit(s, ("row", 4, 3), self.upstream, s)
        else:
            self.upstream(s)

    def upstream(self, s: int) -> None:
        self.at(self.now + self.p.upstream, self.cpu, s, 0.4 * self.p.server_cpu,
                self.settle, s)

    def settle(self, s: int) -> None:
        self.submit(s, ("lease", 0, 2) if self.leases else ("row", 1, 5), self.finish, s)

    def finish(self, s: int) -> None:
        self.done += 1
        self.start(s)

    # ---- group commit -------------------------------------------------------------------
    def submit(self, s: int, op: tuple, then, *args) -> None:
        self.queue[s].append((op, then, args))
        if not self.flushing[s]:
            self.flushing[s] = True
            self.at(self.now, self.flush, s)  # the next loop turn: ops of this turn join

    def flush(self, s: int) -> None:
        batch, self.queue[s] = self.queue[s], []
        if not batch:
            self.flushing[s] = False
            return
        statements = sum(op[1] for op, _, _ in batch)
        rows = sum(op[2] for op, _, _ in batch)
        if any(op[0] == "lease" for op, _, _ in batch):
            # one statement locks the leases and writes every settlement of the batch; alone
            # in its batch it is its own transaction (no BEGIN/COMMIT round trips, which
            # this model leaves out for every transaction alike)
            statements, rows = statements + 1, rows + 1
        on_row = any(op[0] == "row" for op, _, _ in batch)
        if on_row:
            self.lock_row(lambda: self.run_batch(s, batch, statements, rows, True))
        else:
            self.run_batch(s, batch, statements, rows, False)

    def run_batch(self, s: int, batch: list, statements: int, rows: int,
                  on_row: bool) -> None:
        took = statements * self.p.stmt + self.p.commit
        self.pg_cpu += (statements * self.p.stmt_cpu + rows * self.p.row_cpu
                        + self.p.commit_cpu)
        if on_row:
            self.row_held += took
        self.at(self.now + took, self.committed, s, batch, on_row)

    def committed(self, s: int, batch: list, on_row: bool) -> None:
        if on_row:
            self.unlock_row()
        for _, then, args in batch:
            then(*args)
        self.flush(s)

    def lock_row(self, then) -> None:
        if not self.row_busy:
            self.row_busy = True
            then()
        else:
            self.row_waits += 1
            self.row_waiters.append(then)

    def unlock_row(self) -> None:
        if self.row_waiters:
            self.at(self.now + self.p.handoff, self.row_waiters.popleft())
        else:
            self.row_busy = False

    def fold(self, s: int) -> None:  # the lease tick: 3 statements on the row
        self.submit(s, ("row", 3, 3), lambda: None)
        self.at(self.now + self.p.tick, self.fold, s)

    # ---- a run --------------------------------------------------------------------------
    def run(self) -> dict:
        horizon = self.p.seconds * 1000
        for s in range(self.n):
            for _ in range(self.p.conns):
                self.at(0.0, self.start, s)
            if self.leases:
                self.at(self.p.tick * (s + 1) / self.n, self.fold, s)
        while self.events and self.events[0][0] <= horizon:
            self.now, _, fn, args = heapq.heappop(self.events)
            fn(*args)
        rps = self.done / self.p.seconds
        pg_cores_needed = self.pg_cpu / horizon
        capped = rps * min(1.0, self.p.pg_cores / pg_cores_needed) if pg_cores_needed else rps
        return {"servers": self.n, "leases": self.leases, "rps": capped,
                "rps_uncapped": rps,
                "pg_cpu_ms_per_req": self.pg_cpu / max(1, self.done),
                "pg_cores_needed": pg_cores_needed,
                "row_busy_share": self.row_held / horizon,
                "row_waits_per_req": self.row_waits / max(1, self.done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in vars(Params()).items():
        ap.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--servers", default="1,2,4,8,16")
    args = ap.parse_args()
    p = Params(**{k: getattr(args, k) for k in vars(Params())})
    print(f"assumptions: {vars(p)}")
    print("| servers | without leases req/s | PG ms/req | row busy | with leases req/s"
          " | PG ms/req | row busy | PG cores needed |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in args.servers.split(",")):
        a, b = Sim(n, False, p).run(), Sim(n, True, p).run()
        print(f"| {n} | {a['rps']:,.0f} | {a['pg_cpu_ms_per_req']:.3f} |"
              f" {a['row_busy_share']:.0%} | {b['rps']:,.0f} | {b['pg_cpu_ms_per_req']:.3f} |"
              f" {b['row_busy_share']:.1%} | {b['pg_cores_needed']:.1f} |")


if __name__ == "__main__":
    main()
