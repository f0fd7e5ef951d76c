"""Charges to the nanodollar: the price per character from the catalog, characters counted as
Unicode code points, configured prices, a client that goes away, and the ledger after."""

from __future__ import annotations

import socket

import requests

from minitoolai.app import create_app
from tests.conftest import assert_ledger_ok, make_customer
from tests.servers import ThreadedServer
from tests.speech.helpers import account_state, usage_rows, wait_settled

CREDIT = 10**9


async def test_exact_charge_counts_characters_not_bytes(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    text = "Voilà : ça coûte 12 € — très cher ! 日本語も。"
    assert len(text) != len(text.encode())
    response = requests.post(server.url + "/api/texttospeech/", headers=customer.headers,
                             json={"input": text, "voice": "fr-fr", "format": "aac"})
    assert response.status_code == 200, response.text
    assert response.headers["x-characters"] == str(len(text))
    assert response.headers["x-cost-usd"] == f"0.0000{len(text)}"  # 1,000 nano per char
    assert await account_state(database_url, customer.account_id) == \
        (CREDIT - len(text) * 1_000, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.model, r.characters, r.cost, r.status, r.prompt_tokens) for r in rows] == \
        [("espeak-ng", len(text), len(text) * 1_000, "ok", 0)]
    await assert_ledger_ok(database_url)


async def test_configured_local_price_and_key_spend_limit(speech_settings, database_url):
    settings = speech_settings(speech={"espeak_price": "0.123", "espeak_model_id": "voice-box"})
    customer = await make_customer(database_url, CREDIT, spend_limit=1_230)
    with ThreadedServer(create_app(settings)) as live:
        ok = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                           json={"model": "voice-box", "input": "0123456789", "voice": "de"})
        assert ok.status_code == 200, ok.text
        # the key's limit (1,230 nano) is spent: ten more characters (1,230 nano) are refused
        refused = requests.post(live.url + "/v1/audio/speech", headers=customer.headers,
                                json={"model": "voice-box", "input": "0123456789",
                                      "voice": "de"})
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "key_spend_limit"
        listing = {m["model"]: m for m in requests.get(live.url + "/api/voices/").json()["data"]}
        assert listing["voice-box"]["pricing"] == {"per_1m_characters": "0.123"}
    assert await account_state(database_url, customer.account_id) == (CREDIT - 1_230, 0)
    await assert_ledger_ok(database_url)


async def test_client_that_goes_away_is_charged_once_in_full(server, database_url):
    customer = await make_customer(database_url, CREDIT)
    # ~3,800 characters at a quarter speed: some 40 MB of wav, far more than socket buffers
    text = "A long text that the client will not wait for. " * 80
    body = ('{"model": "espeak-ng", "voice": "en-us", "response_format": "wav", '
            f'"speed": 0.25, "input": "{text}"}}').encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + customer.key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
    # the socket is closed after the first bytes of several megabytes of audio
    await wait_settled(database_url, customer.account_id)
    assert await account_state(database_url, customer.account_id) == \
        (CREDIT - len(text) * 1_000, 0)
    rows = await usage_rows(database_url, customer.account_id)
    assert [(r.characters, r.cost) for r in rows] == [(len(text), len(text) * 1_000)]
    assert rows[0].status == "cancelled"
    await assert_ledger_ok(database_url)
