"""The playground's JSON endpoints over plain HTTP: streamed chat charged to the account's
playground key (made once, remade after a revoke), errors in the API's envelope with nothing
charged, and pages that degrade when images or speech are not running."""

from __future__ import annotations

import requests
from sqlalchemy import select

from minitoolai.accounts.store import list_keys
from minitoolai.app import create_app
from minitoolai.dashboard.playground_key import playground_key_id
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from minitoolai.money import format_usd
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token
from tests.servers import ThreadedServer

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
        "max_completion_tokens": 50}


def _post(http: requests.Session, url: str, body: dict, token: str | None) -> requests.Response:
    headers = {"Accept": "application/json"}
    if token:
        headers["X-CSRF-Token"] = token
    return http.post(url, json=body, headers=headers)


async def _keys_and_usage(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        keys = await list_keys(db, account_id)
        current = await playground_key_id(db, account_id)
        async with db.read() as conn:
            rows = (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
    finally:
        await db.dispose()
    return keys, current, rows


async def test_chat_streams_and_charges_the_playground_key(live, database_url):
    account_id, email = await make_user(database_url, credit_nano=100_000_000)
    http = login(live.url, email)
    token = page_token(http, live.url + "/playground")
    response = _post(http, live.url + "/playground/chat", CHAT, token)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and '"usage"' in events[-2]
    _post(http, live.url + "/playground/chat", CHAT, token)
    keys, current, rows = await _keys_and_usage(database_url, account_id)
    assert [k.name for k in keys] == ["playground"] and current == keys[0].id
    assert [r.key_id for r in rows] == [current, current]
    assert keys[0].spent == sum(r.cost for r in rows) > 0

    # the customer revokes it on the keys page: the next call makes a new one
    http.post(live.url + f"/keys/{current}/revoke",
              data={"csrf_token": page_token(http, live.url + "/keys")})
    assert _post(http, live.url + "/playground/chat", CHAT, token).status_code == 200
    keys, new_current, rows = await _keys_and_usage(database_url, account_id)
    assert len(keys) == 2 and new_current != current and rows[-1].key_id == new_current
    assert [k.revoked_at is not None for k in keys if k.id == current] == [True]
    await assert_ledger_ok(database_url)


async def test_errors_use_the_api_envelope_and_cost_nothing(live, database_url):
    account_id, email = await make_user(database_url)  # no credit at all
    http = login(live.url, email)
    token = page_token(http, live.url + "/playground")
    poor = _post(http, live.url + "/playground/chat", CHAT, token)
    assert poor.status_code == 402
    assert poor.json()["error"]["code"] == "insufficient_credit"
    bad = _post(http, live.url + "/playground/chat", {**CHAT, "model": "no-such-model"}, token)
    assert bad.status_code in (400, 404) and bad.json()["error"]["message"]
    image = _post(http, live.url + "/playground/image",
                  {"model": "realvision", "prompt": "x", "width": 100}, token)
    assert image.status_code == 400 and image.json()["error"]["param"] == "width"
    not_json = http.post(live.url + "/playground/chat", data=b"{", headers={
        "Content-Type": "application/json", "Accept": "application/json",
        "X-CSRF-Token": token})
    assert not_json.status_code == 400
    anonymous = _post(requests.Session(), live.url + "/playground/chat", CHAT, token)
    assert anonymous.status_code == 401
    _, _, rows = await _keys_and_usage(database_url, account_id)
    assert all(r.cost == 0 for r in rows)
    await assert_ledger_ok(database_url)


async def test_pages_degrade_without_images_and_speech(dash_settings, database_url):
    _, email = await make_user(database_url)
    app = create_app(dash_settings())
    with ThreadedServer(app) as live:
        app.state.runtime.images = None  # as on a server where these capabilities are off
        app.state.runtime.speech = None
        http = login(live.url, email)
        page = http.get(live.url + "/playground")
        assert page.status_code == 200
        assert "Image generation is not running on this server." in page.text
        assert "Text-to-speech is not running on this server." in page.text
        token = page_token(http, live.url + "/playground")
        for path in ("/playground/image", "/playground/speech"):
            response = _post(http, live.url + path, {"model": "x", "prompt": "y",
                                                     "input": "z"}, token)
            assert response.status_code == 503, path
            assert "not running" in response.json()["error"]["message"]
        assert http.get(live.url + "/docs").status_code == 200


async def test_charge_of_a_request_is_the_accounts_own(live, database_url):
    """/playground/charge answers what one of the session's own requests was charged (the
    settled usage row); another account's request reads exactly like one not settled yet."""
    alice_id, alice = await make_user(database_url, credit_nano=100_000_000)
    _, bob = await make_user(database_url, credit_nano=100_000_000)
    http = login(live.url, alice)
    token = page_token(http, live.url + "/playground")
    response = _post(http, live.url + "/playground/chat", CHAT, token)
    request_id = response.headers["x-request-id"]
    answer = http.get(live.url + "/playground/charge", params={"request_id": request_id})
    rows = (await _keys_and_usage(database_url, alice_id))[2]
    assert answer.status_code == 200
    assert answer.json() == {"request_id": request_id, "settled": True, "status": "ok",
                             "cost": format_usd(rows[0].cost)}
    other = login(live.url, bob).get(live.url + "/playground/charge",
                                     params={"request_id": request_id})
    assert other.json() == {"request_id": request_id, "settled": False}
    for bad in ("", "x" * 65):
        refused = http.get(live.url + "/playground/charge", params={"request_id": bad})
        assert refused.status_code == 400 and "request_id" in refused.text
    # no session, no answer
    anonymous = requests.get(live.url + "/playground/charge",
                             params={"request_id": request_id}, allow_redirects=False)
    assert anonymous.status_code in (302, 303, 401)

