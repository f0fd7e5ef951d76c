"""The core routes: health, balance, models."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from tests.conftest import make_customer, run
from tests.servers import ThreadedServer


def test_balance_and_models(make_settings, database_url):
    customer = run(make_customer(database_url, 1_500_000_123))
    with ThreadedServer(create_app(make_settings())) as live:
        for path in ("/api/balance/", "/api/balance"):
            body = requests.get(live.url + path, headers=customer.headers).json()
            assert body == {"object": "balance", "currency": "USD", "balance": "1.500000123",
                            "held": "0", "available": "1.500000123",
                            "balance_display": "$1.50"}
        assert requests.get(live.url + "/api/balance/").status_code == 401
        models = {m["id"]: m for m in requests.get(live.url + "/api/models/").json()["data"]}
        assert len([m for m in models.values() if m["kind"] == "chat"]) >= 16
        assert models["gpt-5.5"]["pricing"] == {"input_per_1m_tokens": "5",
                                                "output_per_1m_tokens": "30"}
        assert models["gpt-4o"]["reasoning_effort"] is False
        assert models["gpt-5-nano"]["reasoning_effort"] is True
        assert len([m for m in models.values() if m["kind"] == "image"]) == 15
        assert models["realvision"]["pricing"] == {"per_image": "0.0015"}
        assert requests.get(live.url + "/health").json() == {"status": "ok"}
