"""Fixtures of the images tests: settings with image models, a live server on loopback."""

from __future__ import annotations

import json
import time

import pytest
import requests

from minitoolai.app import create_app
from tests.servers import ThreadedServer, free_port

PRICE = 1_500_000  # the seed's $0.0015 per image, in nanodollars


def instant_models(*names: str) -> str:
    return json.dumps({name: {"backend": "instant"} for name in names})


@pytest.fixture
def image_settings(make_settings):
    """Settings factory with the instant backend serving `realvision` by default."""

    def make(**overrides):
        base = {"images": {"models": {"realvision": {"backend": "instant"}},
                           "poll_interval_seconds": 0.05}}
        images = overrides.pop("images", {})
        base["images"].update(images)
        return make_settings(**base, **overrides)

    return make


@pytest.fixture
def serve():
    """serve(settings, workers=True) -> a started ThreadedServer; stopped after the test."""
    servers = []

    def start(settings, *, workers: bool = True) -> ThreadedServer:
        port = free_port()
        if settings.public_url is None:  # image_url links must point at this server
            settings.public_url = f"http://127.0.0.1:{port}"
        server = ThreadedServer(create_app(settings, workers=workers), port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def submit(url: str, key: str, **fields) -> requests.Response:
    """The seed's own client code (requests.post with json= and the Bearer header)."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    data = {"model": "realvision", "prompt": "a lighthouse at dusk", "negativePrompt": "blur",
            "scheduler": "DPM++ SDE", "steps": 4, "cfgScale": 2.0, "width": 320,
            "height": 256}
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not ...}
    return requests.post(url + "/api/texttoimage/", json=data, headers=headers, timeout=30)


def poll(url: str, jobid, signature, *, timeout: float = 60.0,
         until=("success", "error")) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.post(url + "/api/texttoimage/jobs/",
                               json={"jobid": jobid, "signature": signature}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        if body["status"] in until or time.monotonic() > deadline:
            return body
        time.sleep(0.05)
