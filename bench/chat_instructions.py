"""Instructions per chat request, counted by valgrind (callgrind): an A/B of the gateway's
own work that a loaded machine cannot blur, unlike CPU time.

The real app (`create_app`) is driven in-process by a minimal ASGI client (no HTTP server,
no client library), against bench/fake_upstream.py in its own process (not counted). After
a warm-up, callgrind's counters are zeroed, N requests run, and the counters are dumped;
once streamed, once not. Startup (imports, migrations) is not counted, nor the periodic
tasks (stopped: under callgrind they would count by wall time, not by request).

    python bench/chat_instructions.py                      # the checkout's package
    python bench/chat_instructions.py --package /tmp/base  # another copy (git archive REV minitoolai)
    python bench/chat_instructions.py -n 200 --log-level info
    python bench/chat_instructions.py --lease-size 1      # holds from $1 credit leases
    python bench/chat_instructions.py --lease-size 1 -c 16   # 16 requests at a time

Needs valgrind (Debian: apt-get install -y valgrind). Under callgrind Python runs ~50x
slower: a run takes a few minutes, most of it start-up. What it leaves out (uvicorn's HTTP
parsing and socket writes, the kernel) costs the same in both arms of an A/B, so the
relative difference here is an upper bound of the one `gateway.py` would show.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from harness import free_port, wait_http

MODES = ("stream", "nostream")


# ---- the child: runs under valgrind -----------------------------------------------------------
def _handshake(ctl: Path, tag: str) -> None:
    (ctl / f"{tag}.ready").touch()
    while not (ctl / f"{tag}.go").exists():
        time.sleep(0.05)


async def _child(port: int, n: int, ctl: Path, log_level: str, lease_size: str | None,
                 concurrency: int = 1) -> None:
    import orjson

    from minitoolai.accounts.store import create_account, create_key
    from minitoolai.app import create_app
    from minitoolai.config import load_settings
    from minitoolai.db.engine import Database
    from minitoolai.db.migrate import upgrade
    from minitoolai.ledger.credits import add_credit

    env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "OPENAI_API_KEY": "sk-bench"}
    settings = load_settings(env, overrides={
        "data_dir": str(ctl / "data"), "demo_account": False, "rate_limit_per_minute": 0,
        "log_level": log_level, "sweep_interval_seconds": 3600,
        "chat": {"builtin_local_model": False},
        **({"leases": {"size": lease_size}} if lease_size else {})})
    try:  # packages with configured logging: the lines go to a file, as in production
        from minitoolai.observability.logs import configure_logging
    except ImportError:
        pass
    else:
        log_file = (ctl / "server.log").open("w")
        configure_logging(settings, stream=log_file)
    upgrade(settings.resolved_database_url)
    db = Database(settings.resolved_database_url, pool_size=1)
    account = await create_account(db, "bench@example.com", "bench")
    await add_credit(db, account.id, 10**15, kind="topup", note="bench")
    _, key = await create_key(db, account.id, "bench")
    await db.dispose()
    app = create_app(settings, migrate=False, workers=False)
    headers = [(b"authorization", b"Bearer " + key.encode()),
               (b"content-type", b"application/json")]

    async def one(stream: bool) -> None:
        body = orjson.dumps({"model": "gpt-4o-mini", "stream": stream,
                             "messages": [{"role": "user", "content": "Hello there"}]})
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": "/api/chat-completions/",
                 "raw_path": b"/api/chat-completions/", "query_string": b"", "root_path": "",
                 "headers": headers + [(b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000), "state": {}}
        done = asyncio.Event()
        statuses = []
        received = False

        async def receive():
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif not message.get("more_body"):
                done.set()

        await app(scope, receive, send)
        assert statuses == [200], statuses

    async with app.router.lifespan_context(app):
        # periodic work (sweeper, hold renewal, WAL checkpoints, retention) runs by the
        # clock, and under callgrind the clock is ~50x slow: it would count by load, not by
        # request
        for task in app.state.runtime.background:
            task.cancel()
        await asyncio.gather(*app.state.runtime.background, return_exceptions=True)
        app.state.runtime.background.clear()
        for stream in (True, False):
            for _ in range(60):
                await one(stream)
        await app.state.runtime.holds.drain()
        for mode in MODES:
            _handshake(ctl, mode)
            # in waves of `concurrency` (their settlements then share batches, as under load)
            for _ in range(n // concurrency):
                await asyncio.gather(*(one(mode == "stream") for _ in range(concurrency)))
            await app.state.runtime.holds.drain()
            _handshake(ctl, mode + "-done")


# ---- the parent: starts the fake, runs the child under callgrind, zeroes and dumps -----------
def _wait(ctl: Path, name: str, proc: subprocess.Popen) -> None:
    while not (ctl / name).exists():
        if proc.poll() is not None:
            raise SystemExit(f"the measured process exited ({proc.returncode}); see {ctl}")
        time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package", type=Path, default=HERE.parent,
                    help="directory holding the minitoolai package to measure")
    ap.add_argument("-n", type=int, default=200, help="measured requests per mode")
    ap.add_argument("--log-level", default="info", help="the server's log_level")
    ap.add_argument("--lease-size", metavar="USD",
                    help="serve the holds from credit leases of this size (leases.size)")
    ap.add_argument("-c", "--concurrency", type=int, default=1,
                    help="requests at a time (n is rounded down to a multiple of it)")
    ap.add_argument("--child", nargs=2, metavar=("PORT", "CTL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        asyncio.run(_child(int(args.child[0]), args.n, Path(args.child[1]), args.log_level,
                           args.lease_size, args.concurrency))
        return 0

    ctl = Path(tempfile.mkdtemp(prefix="minitoolai-instr-"))
    port = free_port()
    fake = subprocess.Popen([sys.executable, str(HERE / "fake_upstream.py"), "--port",
                             str(port), "--chunks", "20"], stdout=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/stats", fake)
        env = {**os.environ, "PYTHONPATH": str(args.package.resolve())}
        child = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={ctl}/cg.out",
             sys.executable, str(Path(__file__).resolve()), "-n", str(args.n),
             "--log-level", args.log_level, "-c", str(args.concurrency),
             "--child", str(port), str(ctl),
             *(["--lease-size", args.lease_size] if args.lease_size else [])],
            env=env, cwd=ctl, stdout=subprocess.DEVNULL,
            stderr=(ctl / "valgrind.txt").open("w"))
        counts = {}
        for dump, mode in enumerate(MODES, 1):
            _wait(ctl, f"{mode}.ready", child)
            subprocess.run(["callgrind_control", "-z", str(child.pid)], check=True,
                           capture_output=True)
            (ctl / f"{mode}.go").touch()
            _wait(ctl, f"{mode}-done.ready", child)
            subprocess.run(["callgrind_control", "-d", mode, str(child.pid)], check=True,
                           capture_output=True)
            (ctl / f"{mode}-done.go").touch()
            text = (ctl / f"cg.out.{dump}").read_text(errors="replace")
            counts[mode] = int(re.search(r"^summary:\s+(\d+)", text, re.MULTILINE).group(1))
        child.wait(timeout=600)
    finally:
        fake.terminate()
    measured = args.n // args.concurrency * args.concurrency
    print(f"package: {args.package.resolve()}  log_level: {args.log_level}  n: {measured}"
          f"  concurrency: {args.concurrency}  leases: {args.lease_size or 'off'}")
    for mode in MODES:
        print(f"{mode:9s} {counts[mode] / measured / 1e6:8.3f} M instructions per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
