"""What the benchmark scripts share: ports, the CLI as a subprocess, waiting for a server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(env: dict, *args: str, cwd: str | Path, timeout: float = 300) -> str:
    """Run `minitoolai ARGS` and return its stdout; raise with its output if it fails.
    `cwd` matters: `python -m` puts it first on sys.path, so it decides which package runs."""
    proc = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", *args], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"minitoolai {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def wait_http(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    """Wait until `url` answers, failing early if the process serving it exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {seconds}s")
