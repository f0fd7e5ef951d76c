"""The seed's submit + jobs flow over HTTP with the instant backend, and its error paths."""

from __future__ import annotations

import struct

import pytest
import requests

from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import PRICE, poll, submit


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def balance(url: str, key: str) -> dict:
    return requests.get(url + "/api/balance/", headers={"Authorization": f"Bearer {key}"},
                        timeout=10).json()


async def test_submit_poll_download_charges_once(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings())
    answer = submit(server.url, customer.key)
    assert answer.status_code == 200, answer.text
    ticket = answer.json()
    assert ticket["status"] == "success" and isinstance(ticket["jobid"], int)
    assert isinstance(ticket["signature"], str) and len(ticket["signature"]) >= 32
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "success", body
    assert body["message"] == "success" and body["expires_at"]
    image = requests.get(body["image_url"], timeout=10)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (320, 256)
    # the jobs endpoint again: same answer, no second charge
    assert poll(server.url, str(ticket["jobid"]), ticket["signature"])["status"] == "success"
    assert balance(server.url, customer.key)["balance"] == "0.9985"
    assert balance(server.url, customer.key)["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_defaults_and_trailing_slash_optional(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings())
    answer = requests.post(server.url + "/api/texttoimage", json={
        "model": "realvision", "prompt": "x"}, headers={"Authorization": f"Bearer {customer.key}"},
        timeout=10)
    assert answer.status_code == 200, answer.text
    ticket = answer.json()
    done = requests.post(server.url + "/api/texttoimage/jobs", json=ticket, timeout=10)
    assert done.status_code == 200
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert png_size(requests.get(body["image_url"], timeout=10).content) == (1024, 1024)
    await assert_ledger_ok(database_url)


INVALID = [
    ({"model": ...}, "model", "model is required"),
    ({"model": "dalle"}, "model", "model must be one of"),
    ({"model": 3}, "model", "model must be one of"),
    ({"prompt": ...}, "prompt", "prompt is required"),
    ({"prompt": ""}, "prompt", "prompt must not be empty"),
    ({"prompt": 5}, "prompt", "prompt must be a string"),
    ({"negativePrompt": 5}, "negativePrompt", "negativePrompt must be a string"),
    ({"scheduler": "DDIM"}, "scheduler", "scheduler must be one of"),
    ({"steps": 0}, "steps", "steps must be between 1 and 8"),
    ({"steps": 9}, "steps", "steps must be between 1 and 8"),
    ({"steps": "4"}, "steps", "steps must be an integer"),
    ({"steps": 2.5}, "steps", "steps must be an integer"),
    ({"cfgScale": 0.5}, "cfgScale", "cfgScale must be between 1 and 7"),
    ({"cfgScale": 7.5}, "cfgScale", "cfgScale must be between 1 and 7"),
    ({"cfgScale": "2"}, "cfgScale", "cfgScale must be a number"),
    ({"width": 248}, "width", "width must be between 256 and 1344"),
    ({"width": 1352}, "width", "width must be between 256 and 1344"),
    ({"width": 260}, "width", "width must be a multiple of 8"),
    ({"height": 1400}, "height", "height must be between 256 and 1344"),
    ({"height": 300}, "height", "height must be a multiple of 8"),
    ({"height": True}, "height", "height must be an integer"),
    ({"cfg_scale": 2}, "cfg_scale", "unknown field"),
]


@pytest.mark.parametrize(("fields", "param", "message"), INVALID,
                         ids=[f"{p}-{i}" for i, (_, p, _) in enumerate(INVALID)])
async def test_validation_errors_are_400_in_seed_shape_and_free(
        database_url, image_settings, serve, fields, param, message):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    answer = submit(server.url, customer.key, **fields)
    assert answer.status_code == 400, answer.text
    body = answer.json()
    assert body["status"] == "error" and body["jobid"] is None and body["signature"] is None
    assert message in body["message"], body
    assert balance(server.url, customer.key)["balance"] == "1"
    assert balance(server.url, customer.key)["held"] == "0"
    await assert_ledger_ok(database_url)


async def test_other_errors_keep_the_seed_shape(database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("0.001"))  # less than one image
    server = serve(image_settings(), workers=False)
    cases = [
        (submit(server.url, "mt-not-a-key"), 401, "API key"),
        (submit(server.url, customer.key), 402, "insufficient credit"),
        (submit(server.url, customer.key, model="juggernaut"), 503, "not installed"),
        (requests.post(server.url + "/api/texttoimage/", data=b"{not json",
                       headers={"Authorization": f"Bearer {customer.key}",
                                "Content-Type": "application/json"}, timeout=10),
         400, "not valid JSON"),
        (requests.post(server.url + "/api/texttoimage/", json=[1],
                       headers={"Authorization": f"Bearer {customer.key}"}, timeout=10),
         400, "JSON object"),
        (requests.post(server.url + "/api/texttoimage/jobs/", json={"signature": "x"},
                       timeout=10), 400, "jobid"),
        (requests.post(server.url + "/api/texttoimage/jobs/", json={"jobid": 12345678},
                       timeout=10), 400, "signature"),
    ]
    for answer, status, message in cases:
        assert answer.status_code == status, answer.text
        body = answer.json()
        assert body["status"] == "error" and body["jobid"] is None, body
        assert body["signature"] is None and message in body["message"], body
    assert "images.models.juggernaut" in cases[2][0].json()["message"]
    assert balance(server.url, customer.key)["balance"] == "0.001"
    await assert_ledger_ok(database_url)


async def test_forged_or_altered_signature_looks_like_an_unknown_job(
        database_url, image_settings, serve):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(), workers=False)
    ticket = submit(server.url, customer.key).json()
    jobid, signature = ticket["jobid"], ticket["signature"]
    altered = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    attempts = [
        {"jobid": jobid, "signature": altered},
        {"jobid": jobid, "signature": "abcxyz123"},
        {"jobid": jobid + 1, "signature": signature},
        {"jobid": 12345678, "signature": "abcxyz123"},  # unknown job
        {"jobid": 2**60, "signature": signature},
    ]
    answers = [requests.post(server.url + "/api/texttoimage/jobs/", json=a, timeout=10)
               for a in attempts]
    assert {a.status_code for a in answers} == {404}
    assert len({a.content for a in answers}) == 1, [a.text for a in answers]
    assert answers[0].json() == {"status": "error", "jobid": None, "signature": None,
                                 "message": "no job with this jobid and signature",
                                 "code": "job_not_found"}
    # the real ticket still works and reports the queue position
    body = poll(server.url, jobid, signature, until=("queued",))
    assert body["status"] == "queued" and body["position"] == 1
    assert body["message"] == "queued: position 1 in the queue"
    await assert_ledger_ok(database_url)


async def test_models_endpoint_shows_installed_image_models(database_url, image_settings,
                                                            serve):
    customer = await make_customer(database_url, 0)
    server = serve(image_settings(), workers=False)
    models = requests.get(server.url + "/api/models/", headers=customer.headers,
                          timeout=10).json()["data"]
    images = {m["id"]: m for m in models if m["kind"] == "image"}
    assert len(images) == 15
    assert images["realvision"]["available"] is True
    assert images["juggernaut"]["available"] is False
    assert images["realvision"]["pricing"] == {"per_image": "0.0015"}
    assert PRICE == 1_500_000
