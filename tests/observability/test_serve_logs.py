"""`minitoolai serve` configures logging itself: with log_format = "json" every line it
writes to stderr (uvicorn's included) is a JSON object, and each request has its access
line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import orjson
import requests

from tests.servers import free_port


def _wait_health(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError("serve did not come up")


def test_serve_writes_json_lines(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINITOOLAI_", "OPENAI_"))}
    env.update({"MINITOOLAI_LOG_FORMAT": "json", "MINITOOLAI_DEMO_ACCOUNT": "false",
                "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
                "MINITOOLAI_DATA_DIR": str(tmp_path / "data")})
    process = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve",
                                "--port", str(port)], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, process)
        missing = requests.get(url + "/no/such/page", timeout=10)
        assert missing.status_code == 404
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    lines = [orjson.loads(line) for line in stderr.decode().splitlines()]  # all JSON
    assert any(l["logger"] == "uvicorn.error" and "Application startup complete" in l["message"]
               for l in lines), lines
    (access,) = [l for l in lines if l["logger"] == "minitoolai.access"
                 and l["path"] == "/no/such/page"]
    assert access["request_id"] == missing.headers["x-request-id"]
    assert (access["method"], access["status"], access["error"]) == ("GET", 404,
                                                                     "not_found_error")
    assert access["level"] == "INFO" and access["time"].endswith("Z")


def test_serve_with_workers_adds_up_every_process(tmp_path):
    """PROMETHEUS_MULTIPROC_DIR: whichever process answers the scrape, it counts the
    requests every process served; a previous run's files are cleared at start."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # a previous run's
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINITOOLAI_", "OPENAI_"))}
    env.update({"MINITOOLAI_DEMO_ACCOUNT": "false", "MINITOOLAI_ACCESS_LOG": "false",
                "MINITOOLAI_CHAT__BUILTIN_LOCAL_MODEL": "false",
                "MINITOOLAI_DATA_DIR": str(tmp_path / "data"),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    process = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve",
                                "--port", str(port), "--workers", "2"], env=env, cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, process, timeout=120)
        for _ in range(40):  # new connections: the kernel spreads them over both processes
            assert requests.get(url + "/health", headers={"Connection": "close"},
                                timeout=10).ok
        counts = set()
        for _ in range(6):
            text = requests.get(url + "/metrics", headers={"Connection": "close"},
                                timeout=10).text
            (line,) = [l for l in text.splitlines() if l.startswith(
                'minitoolai_http_requests_total{method="GET",model="",route="/health"')]
            counts.add(float(line.rsplit(" ", 1)[1]))
        pids = {p.name.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert "999999.db" not in pids
    # every scrape saw all the /health requests, whichever process answered it (the first
    # health checks of _wait_health are counted too)
    assert len(counts) == 1 and counts.pop() >= 41
    assert len(pids) >= 2
