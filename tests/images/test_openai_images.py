"""`POST /v1/images/generations` with the official openai SDK: url and b64_json, n images,
errors in the OpenAI envelope with no charge."""

from __future__ import annotations

import base64
import io

import openai
import pytest
import requests
from PIL import Image

from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer


def client(server, customer) -> openai.OpenAI:
    return openai.OpenAI(api_key=customer.key, base_url=server.url + "/v1", max_retries=0)


def account(server, customer) -> dict:
    return requests.get(server.url + "/api/balance/", headers=customer.headers,
                        timeout=10).json()


async def test_sdk_generates_urls_and_b64(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings())
    sdk = client(server, customer)
    result = sdk.images.generate(model="realvision", prompt="a harbour", n=2, size="512x384")
    assert len(result.data) == 2 and result.data[0].url != result.data[1].url
    assert result.size is None  # 512x384 is not in OpenAI's enum of response sizes
    for item in result.data:
        image = Image.open(io.BytesIO(requests.get(item.url, timeout=10).content))
        assert image.size == (512, 384)
    result = sdk.images.generate(prompt="a harbour", response_format="b64_json",
                                 size="256x256",
                                 extra_body={"steps": 2, "scheduler": "Euler a", "seed": 3})
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.format == "PNG" and image.size == (256, 256)
    assert account(server, customer)["balance"] == "0.9955"  # three images
    await assert_ledger_ok(database_url)


@pytest.mark.parametrize(("kwargs", "status", "param", "fragment"), [
    ({"size": "big"}, 400, "size", "size must be"),
    ({"size": "1004x1000"}, 400, "width", "multiple of 8"),
    ({"size": "2048x1024"}, 400, "width", "between 256 and 1344"),
    ({"n": 9}, 400, "n", "n must be"),
    ({"response_format": "jpeg"}, 400, "response_format", "response_format"),
    ({"model": "dall-e-3"}, 400, "model", "model must be one of"),
    ({"model": "juggernaut"}, 503, "model", "not installed"),
    ({"extra_body": {"steps": 20}}, 400, "steps", "between 1 and 8"),
    ({"extra_body": {"bogus": 1}}, 400, "bogus", "unknown parameter"),
])
async def test_sdk_errors_use_openai_envelope_and_cost_nothing(
        database_url, image_settings, serve, kwargs, status, param, fragment):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    with pytest.raises(openai.APIStatusError) as caught:
        client(server, customer).images.generate(prompt="x", **{"model": "realvision",
                                                                 **kwargs})
    assert caught.value.status_code == status
    error = caught.value.body
    assert error["param"] == param and fragment in error["message"], error
    assert account(server, customer)["balance"] == "1"
    assert account(server, customer)["held"] == "0"
    await assert_ledger_ok(database_url)


@pytest.mark.parametrize("limited", ["account", "key"])
async def test_insufficient_credit_for_n_holds_nothing(database_url, image_settings, serve,
                                                       limited):
    """n holds are taken together or not at all: a refusal names what the n images need,
    and writes nothing (no hold to give back, no usage row: api.md)."""
    two_images = 2 * 1_500_000
    customer = await make_customer(
        database_url, two_images if limited == "account" else parse_usd("1"),
        spend_limit=two_images if limited == "key" else None)
    server = serve(image_settings())
    with pytest.raises(openai.APIStatusError) as caught:
        client(server, customer).images.generate(model="realvision", prompt="x", n=3,
                                                 size="256x256")
    assert caught.value.status_code == 402
    assert "needs a hold of $0.0045" in caught.value.body["message"], caught.value.body
    assert account(server, customer)["held"] == "0"
    assert account(server, customer)["balance"] == ("0.003" if limited == "account" else "1")
    assert await usage_rows(database_url) == 0
    await assert_ledger_ok(database_url)


async def usage_rows(database_url: str) -> int:
    from minitoolai.db.engine import Database

    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            return (await conn.exec_driver_sql("SELECT count(*) FROM usage")).scalar()
    finally:
        await db.dispose()


async def test_missing_key_is_401(database_url, image_settings, serve):
    server = serve(image_settings(), workers=False)
    answer = requests.post(server.url + "/v1/images/generations", json={"prompt": "x"},
                           timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"


async def test_n_images_get_consecutive_seeds(database_url, image_settings, serve):
    from sqlalchemy import select

    from minitoolai.db.engine import Database
    from minitoolai.images.tables import image_jobs

    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings())
    client(server, customer).images.generate(model="realvision", prompt="x", n=3,
                                             size="256x256", extra_body={"seed": 41})
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            seeds = sorted((await conn.execute(select(image_jobs.c.seed))).scalars())
    finally:
        await db.dispose()
    assert seeds == [41, 42, 43]
    await assert_ledger_ok(database_url)
