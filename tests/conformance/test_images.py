"""/v1/images/generations answers, url and b64_json, against OpenAI's ImagesResponse."""

from __future__ import annotations

import pytest
import requests

from tests.conformance.schemas import assert_conforms
from tests.conftest import make_customer, run


@pytest.mark.parametrize("fields", [
    {"n": 2, "size": "512x384"},  # a size outside OpenAI's enum: `size` is left out
    {"response_format": "b64_json", "size": "256x256"},
    {"response_format": "url", "size": "1024x1024"},
], ids=["url-n2", "b64_json", "url-openai-size"])
def test_generation_conforms(database_url, image_settings, serve, fields):
    customer = run(make_customer(database_url, 10**9))
    server = serve(image_settings())
    response = requests.post(server.url + "/v1/images/generations", headers=customer.headers,
                             json={"model": "realvision", "prompt": "a harbour", **fields},
                             timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == fields.get("n", 1)
    key = "b64_json" if fields.get("response_format") == "b64_json" else "url"
    assert all(item[key] for item in body["data"]), body
    assert_conforms("ImagesResponse", body)
