"""S3-compatible storage against a real local S3 server (moto's server mode on loopback):
upload, presigned download URL, retention delete."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from minitoolai.money import parse_usd
from tests.conftest import assert_ledger_ok, make_customer
from tests.images.conftest import poll, submit
from tests.servers import free_port

boto3 = pytest.importorskip("boto3")
moto_server = pytest.importorskip("moto.server")

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def s3_url():
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", **CREDENTIALS) \
        .create_bucket(Bucket="images")
    yield url
    server.stop()


async def test_s3_upload_presigned_url_and_retention(database_url, image_settings, serve,
                                                     s3_url):
    customer = await make_customer(database_url, parse_usd("1"))
    server = serve(image_settings(images={
        "storage": "s3", "retention_hours": 2 / 3600, "retention_sweep_seconds": 0.2,
        "s3": {"bucket": "images", "prefix": "jobs/", "endpoint_url": s3_url,
               "region": "us-east-1", "access_key_id": "testing",
               "secret_access_key": "testing", "addressing_style": "path"}}))
    ticket = submit(server.url, customer.key, width=384, height=256).json()
    body = poll(server.url, ticket["jobid"], ticket["signature"])
    assert body["status"] == "success", body
    assert body["image_url"].startswith(s3_url + "/images/jobs/")
    assert "X-Amz-Signature=" in body["image_url"]
    image = Image.open(io.BytesIO(requests.get(body["image_url"], timeout=10).content))
    assert image.format == "PNG" and image.size == (384, 256)
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **CREDENTIALS)
    assert s3.list_objects_v2(Bucket="images")["KeyCount"] == 1
    deadline = time.monotonic() + 30
    while s3.list_objects_v2(Bucket="images")["KeyCount"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s3.list_objects_v2(Bucket="images")["KeyCount"] == 0
    await assert_ledger_ok(database_url)
