"""The A1111/Forge backend against a fake A1111 server on loopback, through the whole API."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from minitoolai.images.backends.a1111 import sampler_fields
from minitoolai.images.request import SCHEDULERS
from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import poll, submit
from tests.images.fake_a1111 import SAMPLERS, FakeA1111


@pytest.fixture
def a1111():
    fake = FakeA1111(password="s3cret").start()
    yield fake
    fake.stop()


def a1111_settings(image_settings, fake, **images):
    return image_settings(images={
        "models": {"realvision": {"backend": "a1111", "checkpoint": "realvisionXL_v40"}},
        "a1111": {"base_url": fake.url, "username": "user", "password": "s3cret"},
        **images})


async def test_a1111_job_end_to_end(database_url, image_settings, serve, a1111):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(a1111_settings(image_settings, a1111))
    ticket = submit(server.url, customer.key, scheduler="DPM++ 2M Karras", steps=6,
                    cfgScale=3.5, width=1152, height=768, seed=1234).json()
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "success", body
    image = Image.open(io.BytesIO(requests.get(body["image_url"], timeout=10).content))
    assert image.format == "PNG" and image.size == (1152, 768)
    sent = a1111.requests[0]
    assert sent["sampler_name"] == "DPM++ 2M" and sent["scheduler"] == "Karras"
    assert (sent["steps"], sent["cfg_scale"], sent["width"], sent["height"]) == (6, 3.5, 1152,
                                                                                768)
    assert sent["override_settings"] == {"sd_model_checkpoint": "realvisionXL_v40"}
    assert sent["prompt"] == "a lighthouse at dusk" and sent["negative_prompt"] == "blur"
    assert sent["seed"] == 1234
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account["balance"] == "0.9985" and account["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_a1111_down_then_failing_releases_the_hold(database_url, image_settings, serve,
                                                         a1111):
    customer = await make_customer(database_url, parse_usd("1"))
    a1111.fail_next = 5  # more than max_attempts: every attempt fails
    server = serve(a1111_settings(image_settings, a1111, max_attempts=2))
    ticket = submit(server.url, customer.key).json()
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "error"
    assert "image generation failed" in body["message"], body
    assert "127.0.0.1" not in body["message"] and "A1111" not in body["message"]  # no internals
    assert len(a1111.requests) == 2  # bounded: max_attempts runs
    account = requests.get(server.url + "/api/balance/", headers=customer.headers,
                           timeout=10).json()
    assert account["balance"] == "1" and account["held"] == "0"
    await assert_ledger_ok(database_url)


def test_every_seed_scheduler_maps_to_an_a1111_sampler():
    for name in SCHEDULERS:
        fields = sampler_fields(name, separate=True)
        assert fields["sampler_name"] in SAMPLERS, name
        assert fields["scheduler"] == ("Karras" if name.endswith("Karras") else "Automatic")
        assert sampler_fields(name, separate=False) == {"sampler_name": name}
