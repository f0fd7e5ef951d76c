"""The diffusers backend on a tiny random-weight SD pipeline built in code: every seed
scheduler, batching, the shipped SD1.5/SDXL configs, and the whole HTTP flow."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
import requests

pytest.importorskip("diffusers")
pytest.importorskip("torchsde")

from PIL import Image

from minitoolai.config import load_settings
from minitoolai.images.backends.clip_tokenizer import write_clip_tokenizer
from minitoolai.images.backends.diffusers_backend import (
    CONFIGS,
    DiffusersBackend,
    config_folder,
)
from minitoolai.images.backends.schedulers import SCHEDULER_MAP, build_scheduler
from minitoolai.images.queue import ClaimedJob
from minitoolai.images.request import SCHEDULERS
from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import poll, submit
from tests.images.tiny_pipeline import save_tiny_pipeline


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny") / "tiny-sd")


@pytest.fixture(scope="module")
def backend(tiny_model, tmp_path_factory):
    settings = load_settings({}, overrides={
        "data_dir": str(tmp_path_factory.mktemp("data")),
        "images": {"models": {"realvision": {"path": str(tiny_model)}}}})
    return DiffusersBackend(settings)


def job(scheduler="DPM++ SDE", steps=1, width=256, height=256, seed=7, prompt="a red fox",
        negative="") -> ClaimedJob:
    return ClaimedJob(id=1, request_id="r", account_id=1, endpoint="/api/texttoimage",
                      model="realvision", prompt=prompt, negative_prompt=negative,
                      scheduler=scheduler, steps=steps, cfg_scale=2.0, width=width,
                      height=height, seed=seed, price=1, attempts=1,
                      created_at=datetime.now(UTC))


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_builds_and_runs_a_step(backend, name):
    with backend._lock:
        pipe = backend.pipeline("realvision")
    class_name, flags = SCHEDULER_MAP[name]
    scheduler = build_scheduler(name, pipe.scheduler.config)
    assert type(scheduler).__name__ == class_name
    for flag, value in flags.items():
        assert scheduler.config[flag] == value, (name, flag)
    [png] = backend.generate_sync([job(scheduler=name, steps=1, width=256, height=264)])
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (256, 264)


def test_batch_gives_each_job_its_own_seeded_image(backend):
    alone = backend.generate_sync([job(seed=11, prompt="a red fox")])[0]
    batch = backend.generate_sync([job(seed=11, prompt="a red fox"),
                                   job(seed=12, prompt="a blue boat", negative="fog")])
    assert len(batch) == 2 and batch[0] != batch[1]
    pixels = [Image.open(io.BytesIO(png)).convert("RGB") for png in (alone, batch[0])]
    diff = max(abs(a - b) for a, b in zip(pixels[0].tobytes(), pixels[1].tobytes(),
                                          strict=True))
    assert diff <= 2  # same seed and prompt: the same picture, batched or not


def test_shipped_configs_are_sd15_and_sdxl(tmp_path):
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    counts = {}
    for arch in ("sd15", "sdxl"):
        with torch.device("meta"):  # shapes only: no memory for the weights
            unet = UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(CONFIGS / arch / "unet"))
        counts[arch] = sum(p.numel() for p in unet.parameters())
    assert counts == {"sd15": 859_520_964, "sdxl": 2_567_463_684}  # the published sizes
    with torch.device("meta"):
        encoder = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(CONFIGS / "sdxl" / "text_encoder_2"))
    assert sum(p.numel() for p in encoder.parameters()) == 694_659_840  # OpenCLIP bigG
    folder = config_folder(tmp_path, "sdxl")
    for sub in ("tokenizer", "tokenizer_2"):
        tokenizer = CLIPTokenizer.from_pretrained(folder / sub)
        assert len(tokenizer) == 49408
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368,
                                                           49407]
    assert CLIPTokenizer.from_pretrained(folder / "tokenizer_2").pad_token == "!"


def test_clip_tokenizer_files(tmp_path):
    folder = write_clip_tokenizer(tmp_path / "tok")
    merges = (folder / "merges.txt").read_text().splitlines()
    assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894


async def test_tiny_pipeline_end_to_end_over_http(database_url, image_settings, serve,
                                                  tiny_model):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(images={
        "models": {"realvision": {"backend": "diffusers", "path": str(tiny_model)}}}))
    answer = submit(server.url, customer.key, width=320, height=256, steps=2)
    assert answer.status_code == 200, answer.text
    ticket = answer.json()
    body = poll(server.url, ticket["jobid"], ticket["signature"], timeout=120)
    assert body["status"] == "success", body
    image = Image.open(io.BytesIO(requests.get(body["image_url"], timeout=10).content))
    assert image.format == "PNG" and image.size == (320, 256)
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account["balance"] == "0.9985" and account["held"] == "0"
    await assert_ledger_ok(database_url)
