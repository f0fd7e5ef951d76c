"""The soak: the several-machines topology run for real on loopback, under load, while its
dependencies and processes are broken and restored one after another, then an exact
account of what was served and what was charged.

Shared by `bench/soak.py` (the long run: ten database drops, figures for
bench/RESULTS.md) and `tests/db/test_soak.py` (a short run in CI, with assertions).

The topology: a fresh PostgreSQL database (created here, dropped after), the machine's
Redis under a key prefix of this run's own (its keys deleted after; nothing else
touched), three `minitoolai serve` and two `minitoolai worker` processes, every one of them
reaching PostgreSQL through one TcpProxy of ours and Redis through another
(tests/fakes/tcp_proxy.py), so that a fault is a proxy cut and never touches the shared
services. Chat goes to a fake OpenAI-compatible upstream; images to the instant backend
(a plain PNG at once: what is measured is the queue, the leases and the ledger).

The load: chat clients (streamed and not) and image clients (submit, then poll the ticket
on every server in turn) spread over the three servers, and a poller asking every server's
`/health/ready` every `ready_interval` seconds. Everything a client sees is recorded with
its times; the faults run in sequence with a calm period after each, and each fault's
figures (recovery, 500s, 503s, readiness) are read from the records afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis

from tests.conftest import PG_ADMIN_DSN, _pg_url
from tests.fakes.tcp_proxy import TcpProxy
from tests.servers import free_port

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 0
IMAGE = {"model": "realvision", "prompt": "a lighthouse at dusk", "negativePrompt": "blur",
         "scheduler": "DPM++ SDE", "steps": 4, "cfgScale": 2.0, "width": 320, "height": 256}
CHAT = "/api/chat-completions/"
SUBMIT, JOBS = "/api/texttoimage/", "/api/texttoimage/jobs/"
CREDIT = 10**15  # nanodollars per account: never the limit


# ---- what the clients saw ------------------------------------------------------------------

@dataclass
class Answer:
    """One HTTP exchange of the load: times are seconds since the run's start."""
    kind: str  # chat | chat-stream | submit | poll | ready
    server: int
    began: float
    ended: float
    status: int  # 0: no HTTP answer (connection refused or cut)
    request_id: str | None = None
    served: bool = False  # a complete 2xx: the client got what it pays for
    retry_after: bool = False
    detail: str = ""


@dataclass
class Ticket:
    jobid: int
    signature: str
    request_id: str
    submitted: float
    state: str = "queued"  # the last state a poll answered
    finished: float | None = None


@dataclass
class Fault:
    name: str
    kind: str  # db-cut | db-terminate | redis-cut | serve-kill | worker-term | worker-kill
    began: float
    restored: float = 0.0  # when the dependency or process was given back
    until: float = 0.0  # the next fault's start (or the end of the load)
    target: int | None = None  # the server or worker index, for process faults
    note: str = ""


@dataclass
class SoakOptions:
    db_drops: int = 10
    terminate_every: int = 4  # every Nth database drop is pg_terminate_backend, not a cut
    redis_drops: int = 1
    serve_kills: int = 1
    worker_terms: int = 1
    worker_kills: int = 1
    down_seconds: float = 3.0  # how long a cut lasts
    calm_seconds: float = 6.0  # after each fault's restore, before the next fault
    warmup_seconds: float = 5.0
    chat_clients: int = 6
    image_clients: int = 2
    think_seconds: float = 0.02  # each client's pause between requests
    ready_interval: float = 0.15
    servers: int = 3
    workers: int = 2
    accounts: int = 4
    hold_ttl_seconds: int = 15  # short: the holds a kill -9 leaves are swept before the end
    # the same for image submits: a submit killed between its hold and its jobs' INSERT
    # leaves a hold with no job (released when it expires), one killed before it queued
    # its jobs leaves them `submitting` (failed after min(10 min, the queue timeout))
    image_hold_ttl_seconds: int = 60
    image_queue_timeout_seconds: int = 30

    def faults(self) -> list[tuple[str, str]]:
        """(name, kind) in the order they run: database drops first and last around the
        others, so recovery from each is measured against a steady load."""
        plan: list[tuple[str, str]] = []
        drops = []
        for n in range(1, self.db_drops + 1):
            kind = "db-terminate" if self.terminate_every and n % self.terminate_every == 0 \
                else "db-cut"
            drops.append((f"db#{n}", kind))
        if self.db_drops and self.terminate_every and self.db_drops < self.terminate_every:
            drops[-1] = (drops[-1][0], "db-terminate")  # at least one termination
        others = ([(f"redis#{n}", "redis-cut") for n in range(1, self.redis_drops + 1)]
                  + [(f"serve-kill#{n}", "serve-kill") for n in range(1, self.serve_kills + 1)]
                  + [(f"worker-term#{n}", "worker-term")
                     for n in range(1, self.worker_terms + 1)]
                  + [(f"worker-kill#{n}", "worker-kill")
                     for n in range(1, self.worker_kills + 1)])
        half = (len(drops) + 1) // 2
        plan = drops[:half] + others + drops[half:]
        return plan


# ---- the topology --------------------------------------------------------------------------

class Platform:
    """The database, the proxies and the processes. `start()` / `stop()`, or `with`."""

    def __init__(self, workdir: Path, upstream_url: str, upstream_key: str,
                 options: SoakOptions) -> None:
        self.workdir = Path(workdir)
        self.options = options
        self.upstream_url = upstream_url
        self.upstream_key = upstream_key
        run = uuid.uuid4().hex[:10]
        self.db_name = f"minitoolai_soak_{run}"
        self.direct_url = _pg_url(self.db_name)  # the harness's own view: never cut
        self.redis_prefix = f"mtai-soak-{run}:"
        self.pg_proxy = TcpProxy("127.0.0.1", 5432)
        self.redis_proxy = TcpProxy(REDIS_HOST, REDIS_PORT)
        self.server_ports = [free_port() for _ in range(options.servers)]
        self.servers: list[subprocess.Popen | None] = [None] * options.servers
        self.workers: list[subprocess.Popen | None] = [None] * options.workers
        self.keys: list[tuple[int, str]] = []  # (account id, secret)
        self._logs: list = []
        self._started: list[str] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.server_ports]

    def env(self) -> dict[str, str]:
        """Every process's environment: the same database, Redis and data directory (the
        settlement journal and local image files), no signing secret (each process finds
        the one stored in the database)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
        proxied = _pg_url(self.db_name).replace("127.0.0.1:5432",
                                                f"127.0.0.1:{self.pg_proxy.port}")
        env.update({
            "MINITOOLAI_DATABASE_URL": proxied,
            "MINITOOLAI_REDIS_URL": f"redis://127.0.0.1:{self.redis_proxy.port}/{REDIS_DB}",
            "MINITOOLAI_REDIS_KEY_PREFIX": self.redis_prefix,
            # a busy 2-core machine must not pass for a lost Redis at every slow moment
            "MINITOOLAI_REDIS_TIMEOUT_SECONDS": "1",
            "MINITOOLAI_DATA_DIR": str(self.workdir / "data"),
            "MINITOOLAI_DEMO_ACCOUNT": "false",
            "MINITOOLAI_LOG_LEVEL": "warning",
            "MINITOOLAI_ACCESS_LOG": "false",
            # the shared limiter is exercised on every request, never the limit
            "MINITOOLAI_RATE_LIMIT_PER_MINUTE": "1000000",
            "MINITOOLAI_RATE_LIMIT_BURST": "100000",
            # holds a kill -9 leaves behind are released before the run ends
            "MINITOOLAI_HOLD_TTL_SECONDS": str(self.options.hold_ttl_seconds),
            "MINITOOLAI_SWEEP_INTERVAL_SECONDS": "2",
            "MINITOOLAI_DATABASE__CONNECT_TIMEOUT_SECONDS": "2",
            "MINITOOLAI_DATABASE__POOL_TIMEOUT_SECONDS": "2",
            # (a cut is seen at once, refused; a longer wait only spares a slow moment of a
            # busy machine from passing for an outage)
            "MINITOOLAI_DATABASE__READY_TIMEOUT_SECONDS": "2",
            "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
            "MINITOOLAI_IMAGES__MODELS": json.dumps({"realvision": {"backend": "instant"}}),
            "MINITOOLAI_IMAGES__EMBEDDED_WORKERS": "0",  # the two workers run every job
            # a SIGKILLed worker's job runs again after its lease lapses
            "MINITOOLAI_IMAGES__LEASE_SECONDS": "5",
            "MINITOOLAI_IMAGES__POLL_INTERVAL_SECONDS": "0.1",
            "MINITOOLAI_IMAGES__STOP_DRAIN_SECONDS": "5",
            "MINITOOLAI_IMAGES__HOLD_TTL_SECONDS": str(self.options.image_hold_ttl_seconds),
            "MINITOOLAI_IMAGES__QUEUE_TIMEOUT_SECONDS":
                str(self.options.image_queue_timeout_seconds),
            "OPENAI_BASE_URL": self.upstream_url,
            "OPENAI_API_KEY": self.upstream_key,
        })
        return env

    def _log(self, name: str):
        handle = (self.workdir / f"{name}.log").open("a")
        self._logs.append(handle)
        return handle

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        env = self.env()
        env["MINITOOLAI_DATABASE_URL"] = self.direct_url
        return subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> Platform:
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        _admin(f'CREATE DATABASE "{self.db_name}"')
        self._started.append("db")
        self.pg_proxy.start()
        self.redis_proxy.start()
        migrated = self.cli("db", "upgrade")
        if migrated.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {migrated.stderr}")
        self.keys = asyncio.run(_seed(self.direct_url, self.options.accounts))
        # every process at once: the migration lock and the stored secret see real races
        for i in range(len(self.servers)):
            self.servers[i] = self.spawn_server(i)
        for i in range(len(self.workers)):
            self.workers[i] = self.spawn_worker(i)
        for i in range(len(self.servers)):
            self.wait_server(i)
        return self

    def spawn_server(self, i: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "minitoolai.cli.main", "serve", "--port",
             str(self.server_ports[i])], env=self.env(), stdout=self._log(f"serve{i}"),
            stderr=subprocess.STDOUT)

    def spawn_worker(self, i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "worker"],
                                env=self.env(), stdout=self._log(f"worker{i}"),
                                stderr=subprocess.STDOUT)

    def wait_server(self, i: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.servers[i].poll() is not None:
                raise RuntimeError(f"serve{i} exited: see {self.workdir}/serve{i}.log")
            try:
                if httpx.get(self.urls[i] + "/health/live", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve{i} did not start")

    def stop(self) -> None:
        for process in [*self.servers, *self.workers]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in [*self.servers, *self.workers]:
            if process is not None:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.pg_proxy.stop()
        self.redis_proxy.stop()
        for handle in self._logs:
            handle.close()
        client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=self.redis_prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

    def drop_database(self) -> None:
        if "db" in self._started:
            _admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')

    def __enter__(self) -> Platform:
        try:
            return self.start()
        except BaseException:
            self.stop()
            self.drop_database()
            raise

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.drop_database()

    # ---- faults (blocking: run them in a thread) -----------------------------------------
    def terminate_backends(self) -> int:
        """pg_terminate_backend on this run's database's connections, no other's."""
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            return conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (self.db_name,)).fetchone()[0]


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql)


async def _seed(url: str, count: int) -> list[tuple[int, str]]:
    from minitoolai.accounts.store import create_account, create_key
    from minitoolai.db.engine import Database
    from minitoolai.ledger.credits import add_credit

    db = Database(url, pool_size=1)
    keys = []
    try:
        for n in range(count):
            account = await create_account(db, f"soak-{n}-{uuid.uuid4().hex[:6]}@example.com",
                                           "Soak")
            await add_credit(db, account.id, CREDIT, note="soak credit")
            _, secret = await create_key(db, account.id, "soak")
            keys.append((account.id, secret))
    finally:
        await db.dispose()
    return keys


# ---- the load ------------------------------------------------------------------------------

class Load:
    """The clients and the readiness poller, in one event loop; `answers` and `tickets`
    hold what they saw."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.options = platform.options
        self.answers: list[Answer] = []
        self.tickets: list[Ticket] = []
        self.t0 = time.monotonic()
        self.stopping = asyncio.Event()
        self.clients: list[httpx.AsyncClient] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _client(self, headers: dict | None = None) -> httpx.AsyncClient:
        # no keep-alive reuse across a kill -9: a fresh connection per request is what a
        # load balancer's health-checked pool does not give, but it makes each answer
        # depend on the server alone
        client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, connect=3),
                                   limits=httpx.Limits(max_keepalive_connections=0))
        self.clients.append(client)
        return client

    async def _exchange(self, client: httpx.AsyncClient, kind: str, server: int, method: str,
                        path: str, body: dict | None = None) -> tuple[Answer, bytes]:
        began = self.now()
        try:
            response = await client.request(method, self.platform.urls[server] + path,
                                            json=body)
            content = response.content
            answer = Answer(kind, server, began, self.now(), response.status_code,
                            response.headers.get("x-request-id"),
                            retry_after="retry-after" in response.headers)
        except httpx.HTTPError as exc:
            answer = Answer(kind, server, began, self.now(), 0, detail=type(exc).__name__)
            content = b""
        if answer.status == 503:  # which refusal: database_unavailable, database_busy...
            answer.detail = _code_of(content)
        elif answer.status >= 500:
            answer.detail = content[:300].decode(errors="replace")
        self.answers.append(answer)
        return answer, content

    async def chat_client(self, n: int) -> None:
        _, secret = self.platform.keys[n % len(self.platform.keys)]
        client = self._client({"Authorization": f"Bearer {secret}"})
        i = n
        while not self.stopping.is_set():
            i += 1
            stream = i % 2 == 0
            body = {"model": "gpt-4o-mini", "stream": stream,
                    "messages": [{"role": "user", "content": f"soak {n}/{i} [chunks:3]"}]}
            answer, content = await self._exchange(
                client, "chat-stream" if stream else "chat", i % len(self.platform.urls),
                "POST", CHAT, body)
            if answer.status == 200:
                if stream:
                    answer.served = (content.rstrip().endswith(b"data: [DONE]")
                                     and b'"error"' not in content)
                else:
                    answer.served = b'"choices"' in content
            await asyncio.sleep(self.options.think_seconds if answer.status == 200 else 0.1)

    async def image_client(self, n: int) -> None:
        _, secret = self.platform.keys[n % len(self.platform.keys)]
        client = self._client({"Authorization": f"Bearer {secret}"})
        i = n
        while not self.stopping.is_set():
            i += 1
            answer, content = await self._exchange(client, "submit",
                                                   i % len(self.platform.urls), "POST",
                                                   SUBMIT, IMAGE)
            if answer.status == 200:
                ticket_body = json.loads(content)
                if ticket_body.get("status") == "success" and ticket_body.get("jobid"):
                    answer.served = True
                    ticket = Ticket(ticket_body["jobid"], ticket_body["signature"],
                                    answer.request_id, answer.began)
                    self.tickets.append(ticket)
                    await self.follow(client, ticket, i, until_stopped=True)
            else:
                await asyncio.sleep(0.1)
            await asyncio.sleep(self.options.think_seconds)

    async def follow(self, client: httpx.AsyncClient, ticket: Ticket, i: int, *,
                     until_stopped: bool, deadline: float = 0.0) -> None:
        """Poll a ticket on each server in turn (a ticket made by one server is good on
        every other) until it succeeds or fails."""
        while ticket.finished is None:
            if until_stopped and self.stopping.is_set():
                return
            if deadline and self.now() > deadline:
                return
            i += 1
            await asyncio.sleep(0.1)
            answer, content = await self._exchange(
                client, "poll", i % len(self.platform.urls), "POST", JOBS,
                {"jobid": ticket.jobid, "signature": ticket.signature})
            if answer.status != 200:
                continue
            state = json.loads(content).get("status")
            ticket.state = state
            if state in ("success", "error"):
                ticket.finished = answer.ended
                answer.served = state == "success"

    async def ready_poller(self, server: int) -> None:
        client = self._client()
        while not self.stopping.is_set():
            await self._exchange(client, "ready", server, "GET", "/health/ready")
            await asyncio.sleep(self.options.ready_interval)

    async def finish_tickets(self, timeout: float = 90.0) -> None:
        """After the load: see every ticket to its end."""
        client = self._client()
        deadline = self.now() + timeout
        await asyncio.gather(*(self.follow(client, t, n, until_stopped=False,
                                           deadline=deadline)
                               for n, t in enumerate(self.tickets) if t.finished is None))

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def _code_of(content: bytes) -> str:
    try:
        body = json.loads(content)
    except ValueError:
        return "not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    return str((error or body).get("code") if isinstance(error or body, dict) else "?")


# ---- the faults ----------------------------------------------------------------------------

async def run_fault(platform: Platform, load: Load, fault: Fault, down: float) -> None:
    """Break one thing, give it back; `fault.restored` is when it was given back."""
    kind = fault.kind
    if kind == "db-cut":
        await asyncio.to_thread(platform.pg_proxy.cut)
        await asyncio.sleep(down)
        await asyncio.to_thread(platform.pg_proxy.restore)
    elif kind == "db-terminate":
        killed = await asyncio.to_thread(platform.terminate_backends)
        fault.note = f"{killed} backends terminated"
    elif kind == "redis-cut":
        await asyncio.to_thread(platform.redis_proxy.cut)
        await asyncio.sleep(down)
        await asyncio.to_thread(platform.redis_proxy.restore)
    elif kind == "serve-kill":
        i = fault.target
        platform.servers[i].kill()
        await asyncio.to_thread(platform.servers[i].wait)
        platform.servers[i] = platform.spawn_server(i)
        fault.restored = load.now()
        await asyncio.to_thread(platform.wait_server, i)
        fault.note = f"serve{i} answering {load.now() - fault.restored:.1f} s after restart"
        return
    elif kind in ("worker-term", "worker-kill"):
        i = fault.target
        process = platform.workers[i]
        began = time.monotonic()
        process.send_signal(signal.SIGTERM if kind == "worker-term" else signal.SIGKILL)
        code = await asyncio.to_thread(process.wait)
        fault.note = f"worker{i} exited {code} after {time.monotonic() - began:.1f} s"
        platform.workers[i] = platform.spawn_worker(i)
    else:
        raise ValueError(kind)
    fault.restored = load.now()


async def soak(platform: Platform, say=print) -> tuple[Load, list[Fault]]:
    """Run the load with the options' faults in sequence; returns what was seen."""
    options = platform.options
    load = Load(platform)
    tasks = [asyncio.create_task(load.chat_client(n)) for n in range(options.chat_clients)]
    tasks += [asyncio.create_task(load.image_client(n)) for n in range(options.image_clients)]
    tasks += [asyncio.create_task(load.ready_poller(s)) for s in range(options.servers)]
    faults: list[Fault] = []
    try:
        await asyncio.sleep(options.warmup_seconds)
        kills = Counter()
        for name, kind in options.faults():
            fault = Fault(name, kind, load.now())
            if kind == "serve-kill":
                fault.target = kills[kind] % options.servers
            elif kind.startswith("worker"):
                fault.target = kills["worker"] % options.workers
                kills["worker"] += 1
            kills[kind] += 1
            if faults:
                faults[-1].until = fault.began
            faults.append(fault)
            say(f"[{fault.began:7.1f} s] {name}: {kind}")
            await run_fault(platform, load, fault, options.down_seconds)
            await asyncio.sleep(options.calm_seconds)
        load.stopping.set()
        if faults:
            faults[-1].until = load.now()
        await asyncio.gather(*tasks)
        still_open = sum(1 for t in load.tickets if t.finished is None)
        say(f"[{load.now():7.1f} s] load stopped; following {still_open} open ticket(s)")
        await load.finish_tickets()
    finally:
        load.stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await load.close()
    return load, faults


# ---- the figures ---------------------------------------------------------------------------

SERVING = ("chat", "chat-stream", "submit")
TARGET_SECONDS = 5.0  # the issue's: serving again within 5 s of a restore


@dataclass
class FaultFigures:
    fault: Fault
    requests: int = 0
    served: int = 0
    status_500: int = 0
    other_5xx: int = 0  # 5xx but 500 and 503: 502, 504...
    status_503: int = 0
    without_retry_after: int = 0  # 503s that did not say when to come back
    no_answer: int = 0  # connection refused or cut (a killed process)
    recovery: list[float | None] = field(default_factory=list)  # per server
    ready_down: int = 0  # readiness answers while the database was cut
    ready_lies: int = 0  # ... of which said ready
    ready_back: list[float | None] = field(default_factory=list)  # per server
    ready_false_alarms: int = 0  # not ready, later than TARGET after the restore
    examples: list[str] = field(default_factory=list)

    @property
    def worst_recovery(self) -> float | None:
        known = [r for r in self.recovery if r is not None]
        return None if len(known) < len(self.recovery) else max(known, default=0.0)

    @property
    def worst_ready_back(self) -> float | None:
        known = [r for r in self.ready_back if r is not None]
        return None if len(known) < len(self.ready_back) else max(known, default=0.0)


def figures_of(load: Load, faults: list[Fault]) -> list[FaultFigures]:
    """Each fault's figures, from the answers that ended in its window (its start to the
    next fault's: a request sent just before a cut and refused by it counts for the cut).
    Recovery, per server: the first complete 2xx (chat or image submit; for a worker, an
    image job seen finished) that began after the restore, its end minus the restore."""
    servers = len(load.platform.urls)
    out = []
    warmup = Fault("warm-up", "none", 0.0, 0.0, faults[0].began if faults else load.now())
    for fault in [warmup, *faults]:
        fig = FaultFigures(fault)
        window = [a for a in load.answers if fault.began <= a.ended < fault.until]
        for a in window:
            if a.kind == "ready":
                continue
            fig.requests += 1
            fig.served += a.served
            if a.status == 500:
                fig.status_500 += 1
            elif a.status == 503:
                fig.status_503 += 1
                fig.without_retry_after += not a.retry_after
            elif a.status > 500:
                fig.other_5xx += 1
            elif a.status == 0:
                fig.no_answer += 1
            if (a.status >= 500 and a.status != 503) and len(fig.examples) < 3:
                fig.examples.append(f"{a.kind} {a.status} {a.request_id}: {a.detail[:160]}")
        worker = fault.kind.startswith("worker")
        for s in range(servers):
            kinds = ("poll",) if worker else SERVING
            after = [a.ended for a in window if a.server == s and a.kind in kinds
                     and a.served and a.began >= fault.restored]
            fig.recovery.append(min(after) - fault.restored if after else None)
            ready = [a for a in window if a.kind == "ready" and a.server == s]
            if fault.kind == "db-cut":
                down = [a for a in ready if a.began >= fault.began + 0.3
                        and a.ended <= fault.restored]
                fig.ready_down += len(down)
                fig.ready_lies += sum(1 for a in down if a.status == 200)
            back = [a.ended for a in ready if a.status == 200 and a.began >= fault.restored]
            fig.ready_back.append(min(back) - fault.restored if back else None)
            # (an answer that ended after the next fault began may be telling its truth)
            fig.ready_false_alarms += sum(
                1 for a in ready if a.status not in (200, 0)
                and a.began > fault.restored + TARGET_SECONDS and a.ended < fault.until)
        out.append(fig)
    return out


@dataclass
class Accounting:
    chat_served: int = 0
    images_served: int = 0
    tickets_open: int = 0  # never finished
    tickets_failed: int = 0  # finished in error (released, not charged)
    charges: int = 0
    charged_twice: list[str] = field(default_factory=list)
    served_not_charged: list[str] = field(default_factory=list)
    charged_not_served: list[str] = field(default_factory=list)  # the client saw it fail
    charged_unseen: int = 0  # charged, its answer lost to a kill -9 (never seen)
    answers_lost: int = 0  # requests that got no answer at all
    usage_ok: int = 0
    holds_left: int = 0
    settle_seconds: float = 0.0
    verify_ok: bool = False
    verify_output: str = ""
    details: list[str] = field(default_factory=list)  # the rows behind each anomaly

    @property
    def exact(self) -> bool:
        return not (self.charged_twice or self.served_not_charged or self.charged_not_served
                    or self.holds_left or self.tickets_open) \
            and self.charged_unseen <= self.answers_lost


def account(platform: Platform, load: Load, settle_timeout: float = 90.0) -> Accounting:
    """Wait for every hold to be settled or swept, then match what the clients were served
    with the ledger's charges, by request id, and run `minitoolai ledger verify`."""
    acc = Accounting()
    began = time.monotonic()
    with psycopg.connect(platform.direct_url, autocommit=True) as conn:
        while True:
            acc.holds_left = conn.execute("SELECT count(*) FROM holds").fetchone()[0]
            if acc.holds_left == 0 or time.monotonic() - began > settle_timeout:
                break
            time.sleep(0.5)
        acc.settle_seconds = time.monotonic() - began
        charges = Counter(row[0] for row in conn.execute(
            "SELECT request_id FROM ledger_entries WHERE kind = 'charge'"))
        acc.usage_ok = conn.execute(
            "SELECT count(*) FROM usage WHERE status = 'ok'").fetchone()[0]
        for row in conn.execute("SELECT id, kind, amount, created_at, expires_at FROM holds"):
            acc.details.append(f"hold left: {row}")
        served, images, seen = _client_view(load)
        for request_id in sorted((set(charges) - served - images) & seen):
            usage_row = conn.execute("SELECT endpoint, status, cost, created_at FROM usage"
                                     " WHERE request_id = %s", (request_id,)).fetchone()
            acc.details.append(f"charged, not served: {request_id} usage {usage_row}; client"
                               f" saw {[a for a in load.answers if a.request_id == request_id]}")
    served, images, seen = _client_view(load)
    acc.chat_served = len(served)
    acc.images_served = len(images)
    acc.tickets_open = sum(1 for t in load.tickets if t.finished is None)
    acc.tickets_failed = sum(1 for t in load.tickets if t.state == "error")
    served |= images
    acc.charges = sum(charges.values())
    acc.charged_twice = sorted(k for k, n in charges.items() if n > 1)
    acc.served_not_charged = sorted(served - set(charges))
    unserved = set(charges) - served
    acc.charged_not_served = sorted(unserved & seen)
    acc.charged_unseen = len(unserved - seen)
    acc.answers_lost = sum(1 for a in load.answers if a.kind in SERVING and a.status == 0)
    verified = platform.cli("ledger", "verify")
    acc.verify_ok = verified.returncode == 0
    acc.verify_output = (verified.stdout + verified.stderr).strip()
    return acc


def _client_view(load: Load) -> tuple[set[str], set[str], set[str]]:
    """Request ids: chat served (complete 2xx), images served (jobs seen succeed), and
    every chat or submit answer the clients got at all."""
    served = {a.request_id for a in load.answers if a.kind in ("chat", "chat-stream")
              and a.served}
    images = {t.request_id for t in load.tickets if t.state == "success"}
    seen = {a.request_id for a in load.answers if a.request_id and a.kind in SERVING}
    return served, images, seen


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def report(figures: list[FaultFigures], acc: Accounting, load: Load) -> str:
    """The run as a Markdown table, then the accounting."""
    lines = ["| fault | what | requests | served | 500 | other 5xx | 503 (no Retry-After)"
             " | no answer | serving again after restore, s (worst server) | ready: down"
             " samples / said ready | ready again, s | not ready later |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for f in figures:
        lines.append(
            f"| {f.fault.name} | {f.fault.kind}{' (' + f.fault.note + ')' if f.fault.note else ''}"
            f" | {f.requests} | {f.served} | {f.status_500} | {f.other_5xx}"
            f" | {f.status_503} ({f.without_retry_after}) | {f.no_answer}"
            f" | {_s(f.worst_recovery)} | "
            + (f"{f.ready_down} / {f.ready_lies}" if f.fault.kind == "db-cut" else "-")
            + f" | {_s(f.worst_ready_back)} | {f.ready_false_alarms} |")
    total = sum(f.requests for f in figures)
    lines += [
        "",
        f"- duration {load.now():.0f} s; {total} API requests, {sum(f.status_500 for f in figures)}"
        f" answered 500, {sum(f.other_5xx for f in figures)} other 5xx,"
        f" {sum(f.status_503 for f in figures)} answered 503"
        f" ({sum(f.without_retry_after for f in figures)} without Retry-After);"
        f" {sum(1 for a in load.answers if a.kind == 'ready')} readiness answers",
        f"- served: {acc.chat_served} chat completions (2xx, complete), {acc.images_served}"
        f" images (jobs seen succeed); {acc.tickets_failed} jobs failed (not charged),"
        f" {acc.tickets_open} never finished",
        f"- ledger: {acc.charges} charge entries; served and not charged:"
        f" {len(acc.served_not_charged)}; charged twice: {len(acc.charged_twice)};"
        f" charged though the client saw it fail: {len(acc.charged_not_served)};"
        f" charged with the answer lost to a kill: {acc.charged_unseen}"
        f" (requests left without an answer: {acc.answers_lost});"
        f" usage rows ok: {acc.usage_ok}",
        "- 503s by code: " + ", ".join(f"{code}: {n}" for code, n in sorted(Counter(
            a.detail for a in load.answers if a.status == 503 and a.kind != "ready").items())),
        "- answers by kind and status: " + ", ".join(
            f"{kind} {status}: {n}" for (kind, status), n in sorted(Counter(
                (a.kind, a.status) for a in load.answers).items())),
        f"- settlements: holds left {acc.holds_left} after {acc.settle_seconds:.1f} s of"
        f" waiting; `ledger verify`: {'OK' if acc.verify_ok else 'FAILED'}"
        f" ({acc.verify_output.splitlines()[-1] if acc.verify_output else ''})",
    ]
    lines += [f"- {line}" for line in acc.details[:20]]
    return "\n".join(lines)
