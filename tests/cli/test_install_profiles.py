"""`minitoolai serve` on every documented install: the bare package, each extra alone, `all`.

Each server runs with the modules of the extras it lacks made absent (tests/cli/without_extras.py,
derived from pyproject.toml), in an empty directory, on its embedded defaults. It must start,
answer, and report what it cannot serve with the pip command that enables it: in
`/api/models/`, in a 503 envelope from the capability's endpoints, on the dashboard, and in
`minitoolai models`. (CI also installs the bare package and the quick start's extra for real,
in fresh virtual environments: scripts/quickstart-check.)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.servers import free_port

LAUNCHER = str(Path(__file__).with_name("without_extras.py"))
INSTALL = {extra: f"pip install 'minitoolai[{extra}]'" for extra in ("local", "speech", "images")}
HELLO = [{"role": "user", "content": "Hello"}]


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINITOOLAI_", "OPENAI_"))}
    # one diffusers checkpoint configured, so that the images extra has something to enable
    checkpoint = tmp_path / "realvision.safetensors"
    checkpoint.write_bytes(b"not loaded unless a job runs")
    env["MINITOOLAI_IMAGES__MODELS"] = (
        f'{{"realvision": {{"backend": "diffusers", "path": "{checkpoint}"}}}}')
    return env


def wait_up(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n"
                                 + process.stdout.read().decode(errors="replace"))
        try:
            if requests.get(url + "/health", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError("serve did not come up")


@pytest.fixture
def serve(tmp_path):
    """Start `serve` with only `extras` installed; yield (base url, demo key)."""
    processes = []

    def start(extras: str) -> tuple[str, str]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, LAUNCHER, extras, "serve", "--port", str(port)], cwd=tmp_path,
            env=clean_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_up(url, process)
        key = (tmp_path / "data" / "demo-api-key.txt").read_text().strip()
        return url, key

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def models_of(url: str) -> dict[str, dict]:
    response = requests.get(url + "/api/models/")
    assert response.status_code == 200
    return {m["id"]: m for m in response.json()["data"]}


def assert_unavailable(model: dict, extra: str) -> None:
    assert model["available"] is False
    assert INSTALL[extra] in model["unavailable_reason"]


def assert_503(response: requests.Response, extra: str) -> dict:
    assert response.status_code == 503, response.text
    body = response.json()
    error = body["error"] if "error" in body else body
    assert INSTALL[extra] in error["message"]
    return body


PROFILES = ["", "local", "speech", "images", "dashboard", "all"]


@pytest.mark.parametrize("extras", PROFILES, ids=[p or "bare" for p in PROFILES])
def test_serve_starts_and_names_what_each_missing_extra_enables(serve, extras):
    installed = {"local", "speech", "images"} if extras == "all" else {extras}
    url, key = serve(extras)
    auth = {"Authorization": f"Bearer {key}"}
    models = models_of(url)

    # chat: the built-in model
    assert "smollm2-135m" in models
    if "local" in installed:
        assert models["smollm2-135m"]["available"] is True
        response = requests.post(url + "/api/chat-completions/", headers=auth, json={
            "model": "smollm2-135m", "messages": HELLO, "max_completion_tokens": 4})
        assert response.status_code == 200 and response.text.rstrip().endswith("[DONE]")
    else:
        assert_unavailable(models["smollm2-135m"], "local")
        body = assert_503(requests.post(url + "/api/chat-completions/", headers=auth, json={
            "model": "smollm2-135m", "messages": HELLO}), "local")
        assert (body["error"]["type"], body["error"]["param"]) == \
            ("service_unavailable", "model")

    # speech: the local eSpeak NG engine
    speech = {"model": "espeak-ng", "input": "Hello there."}
    if "speech" in installed:
        assert models["espeak-ng"]["available"] is True
        response = requests.post(url + "/api/texttospeech/", headers=auth, json=speech)
        assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
        assert len(response.content) > 1000
    else:
        assert_unavailable(models["espeak-ng"], "speech")
        body = assert_503(requests.post(url + "/api/texttospeech/", headers=auth, json=speech),
                          "speech")
        assert body["error"]["code"] == "model_unavailable"

    # images: a configured diffusers checkpoint needs the images extra to run
    if "images" in installed:
        assert models["realvision"]["available"] is True
    else:
        assert_unavailable(models["realvision"], "images")
        body = assert_503(requests.post(url + "/api/texttoimage/", headers=auth, json={
            "model": "realvision", "prompt": "a cat"}), "images")
        assert (body["status"], body["jobid"], body["signature"]) == ("error", None, None)

    # the dashboard's pages, and the reason shown there
    assert requests.get(url + "/").status_code == 200
    docs = requests.get(url + "/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    if "local" not in installed:
        assert "minitoolai[local]" in docs.text

    # the balance moved only by what was served (the built-in model is free)
    balance = requests.get(url + "/api/balance/", headers=auth)
    assert balance.status_code == 200


@pytest.mark.parametrize("extras", ["", "local"], ids=["bare", "local"])
def test_models_command_names_the_install_command(tmp_path, extras):
    out = subprocess.run([sys.executable, LAUNCHER, extras, "models"], cwd=tmp_path,
                         env={**clean_env(tmp_path), "COLUMNS": "400"}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = next(row for row in out.stdout.splitlines() if "smollm2-135m" in row)
    if extras == "local":
        assert " yes " in line
    else:
        assert " no " in line and "minitoolai[local]" in line


def test_bare_banner_says_no_model_is_available(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, LAUNCHER, "", "serve", "--port", str(port)],
                               cwd=tmp_path, env=clean_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
    try:
        wait_up(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert "No chat model is available on this install yet" in output
    assert "pip install 'minitoolai[local]'" in output
    assert f"curl http://127.0.0.1:{port}/api/models/" in output
    assert "Traceback" not in output
