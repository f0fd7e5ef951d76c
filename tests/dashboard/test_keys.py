"""API keys managed from the dashboard: the spending limits, expiry and model allowlist
set there are the ones the API enforces on every route that charges; clearing a limit
lifts it; bad values are refused with the reason next to their field."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import requests

from minitoolai.accounts.store import list_keys, update_key
from minitoolai.db.engine import Database
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token, visible

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


async def _key_settings(database_url: str, key_id: str, **values):
    db = Database(database_url, pool_size=1)
    try:
        return await update_key(db, key_id, None, **values)
    finally:
        await db.dispose()


async def test_key_settings_from_the_dashboard_are_enforced_on_every_charging_route(
        live, database_url):
    """A key limited to one model, set in the dashboard's edit form: every route that
    charges refuses the others with 403 model_not_allowed in its own envelope, before any
    hold (nothing charged, no usage row); a monthly limit refuses with 402
    key_monthly_limit; an expired key is refused with 401 expired_api_key everywhere."""
    account_id, email = await make_user(database_url, credit_nano=1_000_000_000)
    http = login(live.url, email)
    token = page_token(http, live.url + "/keys")
    created = http.post(live.url + "/keys", data={"csrf_token": token, "name": "bot"})
    secret = re.search(r'id="secret" class="mono" value="([^"]+)"', created.text).group(1)
    (key,) = await _keys(database_url, account_id)
    edit = http.get(live.url + f"/keys/{key.id}")
    assert edit.status_code == 200 and 'name="month_limit"' in edit.text
    saved = http.post(live.url + f"/keys/{key.id}", data={
        "csrf_token": token, "name": "bot", "spend_limit": "", "month_limit": "",
        "expires": "", "models": "gpt-4o-mini"}, allow_redirects=False)
    assert saved.status_code == 303
    headers = {"Authorization": f"Bearer {secret}"}
    refusals = {
        "/v1/chat/completions": {**CHAT, "model": "gpt-4o"},
        "/api/chat-completions/": {**CHAT, "model": "gpt-4o"},
        "/v1/responses": {"model": "gpt-4o", "input": "Hello", "max_output_tokens": 50},
        "/v1/images/generations": {"model": "realvision", "prompt": "a cat"},
        "/v1/audio/speech": {"model": "espeak-ng", "input": "Hello", "voice": "en-us"},
    }
    for path, body in refusals.items():
        response = requests.post(live.url + path, json=body, headers=headers)
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "permission_error", "model_not_allowed", "model"), path
        assert "restricted to: gpt-4o-mini" in error["message"]
    seed_image = requests.post(live.url + "/api/texttoimage/", headers=headers,
                               json={"model": "realvision", "prompt": "a cat"})
    assert seed_image.status_code == 403
    assert seed_image.json()["status"] == "error" and seed_image.json()["jobid"] is None
    assert "restricted to" in seed_image.text
    ok = requests.post(live.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert ok.status_code == 200, ok.text
    (key,) = await _keys(database_url, account_id)
    assert key.spent > 0 and key.models == ("gpt-4o-mini",)
    usage = http.get(live.url + "/usage.csv").text.strip().splitlines()
    assert len(usage) == 2  # the header and the one request served

    # a monthly limit below what it spent this month: the next request is refused
    http.post(live.url + f"/keys/{key.id}", data={"csrf_token": token,
                                                 "month_limit": "0.000001"})
    refused = requests.post(live.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "key_monthly_limit"

    # expired (by the database's clock): 401 on every route, charging or not
    await _key_settings(database_url, key.id, month_limit=None,
                        expires_at=datetime.now(UTC) - timedelta(seconds=1))
    # saving the key in the dashboard drops the servers' cached lookups of it
    http.post(live.url + f"/keys/{key.id}", data={"csrf_token": token, "name": "bot 2"})
    for method, path in (("GET", "/api/balance/"), ("POST", "/v1/chat/completions")):
        response = requests.request(method, live.url + path, json=CHAT, headers=headers)
        assert response.status_code == 401, (path, response.text)
        assert response.json()["error"]["code"] == "expired_api_key"
    page = http.get(live.url + "/keys").text
    row = re.search(rf'<tr class="" data-key-id="{key.id}">(.*?)</tr>', page, re.DOTALL).group(1)
    assert "expired" in visible(row)
    await assert_ledger_ok(database_url)


async def test_edit_form_refusals_name_their_field(live, database_url):
    account_id, email = await make_user(database_url)
    http = login(live.url, email)
    token = page_token(http, live.url + "/keys")
    http.post(live.url + "/keys", data={"csrf_token": token, "name": "k"})
    (key,) = await _keys(database_url, account_id)
    for field, text, message in (("models", "gpt-4o-mini, no-such-model",
                                  "not a model of this server: no-such-model"),
                                 ("expires", "2001-01-01", "has already passed"),
                                 ("expires", "soon", "not a date"),
                                 ("month_limit", "-2", "cannot be negative")):
        response = http.post(live.url + f"/keys/{key.id}",
                             data={"csrf_token": token, field: text})
        assert response.status_code == 400, field
        error = re.search(rf'<span class="error-text" role="alert" id="err-{field}">(.*?)'
                          '</span>', response.text)
        assert error and message in error.group(1), (field, response.text[:200])
        assert f'value="{text}"' in response.text  # what was typed is kept
    (unchanged,) = await _keys(database_url, account_id)
    assert unchanged.models is None and unchanged.expires_at is None
    # another account's key answers like an unknown one
    _, other = await make_user(database_url)
    assert login(live.url, other).get(live.url + f"/keys/{key.id}").status_code == 404
