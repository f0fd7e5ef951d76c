"""curl as a client, the way an operator's docs show it (docs/speech.md)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import assert_ledger_ok, make_customer
from tests.speech.conftest import decode
from tests.speech.helpers import account_state

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def test_curl_writes_a_playable_file(server, database_url, tmp_path):
    customer = await make_customer(database_url, 10**9)
    out = tmp_path / "hello.wav"
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {customer.key}",
         "-H", "Content-Type: application/json",
         "-d", json.dumps({"input": "Hello from curl", "format": "wav"}),
         server.url + "/api/texttospeech/", "-o", str(out), "-w", "%{content_type}"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "audio/wav"
    assert decode(out.read_bytes(), "wav")[0] > 0.5
    failed = subprocess.run(
        ["curl", "-sS", "-H", f"Authorization: Bearer {customer.key}",
         "-H", "Content-Type: application/json",
         "-d", json.dumps({"input": "x", "voice": "nobody"}),
         server.url + "/api/texttospeech", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60)
    body, status = failed.stdout.rsplit("\n", 1)
    assert status == "400" and json.loads(body)["error"]["param"] == "voice"
    # curl -d alone sends a form's Content-Type: refused (415), not read as JSON
    untyped = subprocess.run(
        ["curl", "-sS", "-H", f"Authorization: Bearer {customer.key}",
         "-d", json.dumps({"input": "x"}),
         server.url + "/api/texttospeech", "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60)
    body, status = untyped.stdout.rsplit("\n", 1)
    assert status == "415" and json.loads(body)["error"]["code"] == "unsupported_media_type"
    assert await account_state(database_url, customer.account_id) == \
        (10**9 - len("Hello from curl") * 1_000, 0)
    await assert_ledger_ok(database_url)
