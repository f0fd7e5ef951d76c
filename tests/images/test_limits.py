"""Limits and edges: a full queue, /v1 timeouts (cancelled and refunded), a worker with
nothing to serve, checkpoint architecture detection, configuration checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import openai
import pytest
import requests

from minitoolai.config import load_settings
from minitoolai.errors import ConfigError
from minitoolai.images.backends import instant
from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import submit


async def test_full_queue_is_503_with_retry_after_and_free(database_url, image_settings,
                                                          serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(images={"max_queued": 2}), workers=False)
    assert [submit(server.url, customer.key).status_code for _ in range(2)] == [200, 200]
    answer = submit(server.url, customer.key)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "10"
    body = answer.json()
    assert body["status"] == "error" and body["code"] == "queue_full"
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account["held"] == "0.003" and account["balance"] == "1"  # the two queued jobs
    await assert_ledger_ok(database_url)


async def test_v1_timeout_cancels_and_refunds(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(images={"openai_wait_seconds": 0.3}), workers=False)
    sdk = openai.OpenAI(api_key=customer.key, base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.images.generate(model="realvision", prompt="x", n=2, size="256x256")
    assert caught.value.status_code == 504
    assert "nothing was charged" in caught.value.body["message"]
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account["held"] == "0" and account["balance"] == "1"
    await assert_ledger_ok(database_url)


async def test_v1_timeout_does_not_charge_a_job_already_running(database_url, image_settings,
                                                                serve, monkeypatch):
    """A job running when the /v1 request gives up is cancelled too: its image would reach
    nobody, so it must not be charged when the worker finishes it."""
    finish = instant.InstantBackend.generate

    async def slow(self, jobs):
        await asyncio.sleep(1.5)  # still running when the request stops waiting
        return await finish(self, jobs)

    monkeypatch.setattr(instant.InstantBackend, "generate", slow)
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(images={"openai_wait_seconds": 0.5}), workers=True)
    sdk = openai.OpenAI(api_key=customer.key, base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.images.generate(model="realvision", prompt="x", n=1, size="256x256")
    assert caught.value.status_code == 504
    await asyncio.sleep(2.5)  # the worker finishes the job it had started
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account == {**account, "balance": "1", "held": "0"}
    await assert_ledger_ok(database_url)


def test_worker_without_models_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
    env.update({"MINITOOLAI_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": ""})
    done = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", "worker"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "no image model is installed" in done.stderr


def test_architecture_detection(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from minitoolai.images.backends.diffusers_backend import detect_architecture

    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(2),
               "model.diffusion_model.out.2.bias": torch.zeros(4)},
              str(tmp_path / "xl.safetensors"))
    save_file({"cond_stage_model.transformer.text_model.final_layer_norm.weight":
               torch.zeros(2)}, str(tmp_path / "v15.safetensors"))
    assert detect_architecture(tmp_path / "xl.safetensors") == "sdxl"
    assert detect_architecture(tmp_path / "v15.safetensors") == "sd15"
    assert detect_architecture(tmp_path / "old.ckpt") == "sd15"


def test_settings_refuse_a_hold_shorter_than_the_queue():
    with pytest.raises(ConfigError, match="hold_ttl_seconds"):
        load_settings({}, overrides={"images": {"hold_ttl_seconds": 3600}})
    with pytest.raises(ConfigError, match="s3.bucket"):
        load_settings({}, overrides={"images": {"storage": "s3"}})
    with pytest.raises(ConfigError, match="images.models.realvision.backend"):
        load_settings({}, overrides={"images": {"models": {"realvision": {"backend": "x"}}}})


def test_models_command_shows_installed_image_models(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINITOOLAI_")}
    env.update({"MINITOOLAI_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "", "COLUMNS": "200",
                "MINITOOLAI_IMAGES__MODELS": '{"realvision": {"backend": "a1111"}, '
                                             '"valhalla": {"path": "/missing.safetensors"}}',
                "MINITOOLAI_IMAGES__A1111__BASE_URL": "http://127.0.0.1:7860"})
    done = subprocess.run([sys.executable, "-m", "minitoolai.cli.main", "models"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = {line.split("│")[1].strip(): line for line in done.stdout.splitlines()
             if line.count("│") > 4}
    assert "│ yes" in lines["realvision"] and "a1111: http://127.0.0.1:7860" in lines["realvision"]
    assert "│ no" in lines["valhalla"] and "does not exist" in lines["valhalla"]
    assert "│ no" in lines["juggernaut"] and "images.models.juggernaut" in lines["juggernaut"]
