"""The app's dispatch: the chat endpoints are served ahead of FastAPI's middleware, with the
same error envelopes as every other route."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from minitoolai.chat.service import ChatService
from tests.conftest import assert_ledger_ok, make_customer, run
from tests.servers import ThreadedServer


def test_hot_routes_answer_errors_in_the_envelope(make_settings, database_url, monkeypatch):
    customer = run(make_customer(database_url, 1_000_000))
    with ThreadedServer(create_app(make_settings())) as live:
        for path in ("/api/chat-completions/", "/api/chat-completions",
                     "/v1/chat/completions"):
            # other methods still reach the router: 405 in the envelope
            wrong = requests.get(live.url + path, headers=customer.headers)
            assert wrong.status_code == 405
            assert wrong.json()["error"]["code"] == "method_not_allowed"
            # the hot path's own errors
            unauth = requests.post(live.url + path, json={})
            assert unauth.status_code == 401 and unauth.json()["error"]["type"]

        async def broken(self, *args, **kwargs):
            raise RuntimeError("a bug in the chat service")

        monkeypatch.setattr(ChatService, "respond", broken)
        failed = requests.post(live.url + "/api/chat-completions/", headers=customer.headers,
                               json={"model": "gpt-4o-mini",
                                     "messages": [{"role": "user", "content": "hi"}]})
        assert failed.status_code == 500
        assert failed.json() == {"error": {"message": "internal server error",
                                           "type": "server_error", "param": None,
                                           "code": None}}
        assert "bug" not in failed.text  # no internals leak to the client
        unknown = requests.post(live.url + "/api/chat-completions/x", json={})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_route"
    run(assert_ledger_ok(database_url))


RELAY_ONLY_SCRIPT = """
import asyncio, json, os, sys
from minitoolai.serving import app_from_env

async def main():
    app = app_from_env()
    queue, out = asyncio.Queue(), []
    await queue.put({"type": "lifespan.startup"})

    async def send(message):
        out.append(message["type"])

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, queue.get, send))
    while not out:
        await asyncio.sleep(0.01)
    await queue.put({"type": "lifespan.shutdown"})
    await task
    heavy = ("alembic", "typer", "rich", "redis", "cryptography", "av", "numpy",
             "llama_cpp", "torch", "transformers")
    print(json.dumps([out[0], sorted({m.split(".")[0] for m in sys.modules
                                      if m.split(".")[0] in heavy})]))

asyncio.run(main())
"""


def test_a_relay_only_server_loads_nothing_it_does_not_use(database_url, tmp_path):
    """What `serve` execs into (minitoolai.serving) starts without the command line, the
    migration tooling, the Redis client (no redis_url), the dashboard's sealing library
    (until a secret is revealed), PyAV/numpy (no speech engine) or a local model: that is
    what keeps a relay-only server under 100 MB (bench/RESULTS.md)."""
    import json
    import os
    import subprocess
    import sys

    from minitoolai.db.migrate import upgrade

    upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
    env.update({"MINITOOLAI_DATA_DIR": str(tmp_path), "MINITOOLAI_DATABASE_URL": database_url,
                "MINITOOLAI_DEMO_ACCOUNT": "false",
                "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
                "MINITOOLAI_SPEECH__ESPEAK": "false", "MINITOOLAI_LOG_LEVEL": "warning",
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_API_KEY": "sk-test",
                "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)})
    proc = subprocess.run([sys.executable, "-c", RELAY_ONLY_SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    started, loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert started == "lifespan.startup.complete"
    assert loaded == []
