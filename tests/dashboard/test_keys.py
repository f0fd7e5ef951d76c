"""API keys managed from the dashboard: the spending limit set there is the one the API
enforces; clearing it lifts it; bad limits are refused with the reason."""

from __future__ import annotations

import re

import requests

from minitoolai.accounts.store import list_keys
from minitoolai.db.engine import Database
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
        "max_completion_tokens": 50}


async def _keys(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        return await list_keys(db, account_id)
    finally:
        await db.dispose()


async def test_spending_limit_set_in_the_dashboard_is_enforced(live, database_url):
    account_id, email = await make_user(database_url, credit_nano=1_000_000_000)
    http = login(live.url, email)
    token = page_token(http, live.url + "/keys")
    created = http.post(live.url + "/keys", data={"csrf_token": token, "name": "ci",
                                                  "spend_limit": "0.000001"})
    secret = re.search(r'id="secret" class="mono" value="([^"]+)"', created.text).group(1)
    (key,) = await _keys(database_url, account_id)
    assert key.spend_limit == 1_000 and key.name == "ci"
    headers = {"Authorization": f"Bearer {secret}"}
    refused = requests.post(live.url + "/api/chat-completions/", json=CHAT, headers=headers)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "key_spend_limit"

    # bad limits are refused with the reason, the limit unchanged
    for text in ("-1", "lots", "0.0000000001"):
        response = http.post(live.url + f"/keys/{key.id}",
                             data={"csrf_token": token, "spend_limit": text})
        assert response.status_code == 400, text
    assert (await _keys(database_url, account_id))[0].spend_limit == 1_000

    # cleared: the same request goes through and is charged to this key
    saved = http.post(live.url + f"/keys/{key.id}", data={"csrf_token": token,
                                                         "spend_limit": ""})
    assert saved.status_code == 200 and "Saved ci." in saved.text
    ok = requests.post(live.url + "/api/chat-completions/", json=CHAT, headers=headers)
    assert ok.status_code == 200
    (key,) = await _keys(database_url, account_id)
    assert key.spend_limit is None and key.spent > 0 and key.last_used_at is not None
    page = http.get(live.url + "/keys").text
    assert "never" not in page and secret not in page  # the secret is never shown again
    await assert_ledger_ok(database_url)


async def test_creating_a_key_redirects_and_shows_the_secret_once(live, database_url):
    """POST /keys answers 303; the secret rides to the next GET of /keys in a sealed cookie,
    shown once; the cookie opens for no other session and a tampered one shows nothing."""
    account_id, email = await make_user(database_url)
    http = login(live.url, email)
    token = page_token(http, live.url + "/keys")
    created = http.post(live.url + "/keys", data={"csrf_token": token, "name": "prg"},
                        allow_redirects=False)
    assert created.status_code == 303 and created.headers["location"] == "/keys"
    assert "mtai-" not in created.text
    sealed = http.cookies.get("mtai_reveal", path="/keys")
    assert sealed and "mtai-" not in sealed
    (key,) = await _keys(database_url, account_id)

    # another logged-in session given the same cookie sees no secret
    _, other_email = await make_user(database_url)
    other = login(live.url, other_email)
    other.cookies.set("mtai_reveal", sealed, path="/keys")
    assert 'id="secret"' not in other.get(live.url + "/keys").text
    # nor does a tampered cookie (and the page still works)
    tampered = http.cookies.copy()
    tampered.set("mtai_reveal", sealed[:-4] + "AAAA", path="/keys")
    page = requests.get(live.url + "/keys", cookies=tampered)
    assert page.status_code == 200 and 'id="secret"' not in page.text

    shown = http.get(live.url + "/keys")
    secret = re.search(r'id="secret" class="mono" value="([^"]+)"', shown.text).group(1)
    assert secret.startswith(key.prefix)
    assert "mtai_reveal" not in http.cookies.get_dict(path="/keys")  # deleted by that GET
    again = http.get(live.url + "/keys")
    assert 'id="secret"' not in again.text and secret not in again.text
    assert len(await _keys(database_url, account_id)) == 1
    balance = requests.get(live.url + "/api/balance/",
                           headers={"Authorization": f"Bearer {secret}"})
    assert balance.status_code == 200
