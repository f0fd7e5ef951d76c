"""Run ASGI apps for real on loopback, in a background thread with its own event loop."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import requests
import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadedServer:
    """uvicorn serving `app` on 127.0.0.1:port until `stop()`."""

    def __init__(self, app, port: int | None = None, **options) -> None:
        """`options`: more uvicorn.Config options (e.g. slow_clients.uvicorn_options)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on", access_log=False, **options)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> ThreadedServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 30 s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_serve_process(env: dict, port: int) -> subprocess.Popen:
    """`minitoolai serve --port PORT` as a real process (one a test can kill -9), once its
    /health answers; its output is discarded (a full pipe would block it)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "minitoolai.cli.main", "serve", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return process
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start")


def run_cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`minitoolai ARGS...` in a process of its own."""
    return subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
