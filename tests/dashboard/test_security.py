"""Security over plain HTTP: CSRF, cookies, sessions stored hashed, login throttling, open
redirects, admin pages refused to customers, and one customer never reaching another's keys
or usage."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from minitoolai.accounts.store import create_account, create_key, list_keys
from minitoolai.app import create_app
from minitoolai.clock import utcnow
from minitoolai.dashboard.sessions import ANON_CSRF_COOKIE, SESSION_COOKIE, purge_expired
from minitoolai.dashboard.tables import dashboard_sessions
from minitoolai.db.engine import Database
from minitoolai.db.tables import api_keys, ledger_entries, usage
from minitoolai.ledger.credits import add_credit
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import PASSWORD, csrf_of, login, make_user, page_token, visible
from tests.servers import ThreadedServer

ADMIN_GETS = ["/admin", "/admin/accounts", "/admin/accounts/1", "/admin/codes",
              "/admin/catalog"]
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}],
        "max_completion_tokens": 50}


def _set_cookie(response, name: str) -> str:
    headers = [h for h in response.raw.headers.getlist("set-cookie") if h.startswith(name + "=")]
    assert headers, f"no Set-Cookie for {name}"
    return headers[0]


async def _count(database_url: str, table) -> int:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(table))).scalar_one()
    finally:
        await db.dispose()


async def test_post_without_csrf_is_refused(live, database_url):
    _, email = await make_user(database_url)
    http = login(live.url, email)
    before = await _count(database_url, api_keys)
    for data in ({"name": "x"}, {"name": "x", "csrf_token": "forged"}):
        response = http.post(live.url + "/keys", data=data)
        assert response.status_code == 403
        assert "security token" in response.text
    # JSON posts (the playground) need the header
    response = http.post(live.url + "/playground/chat", json=CHAT,
                         headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert await _count(database_url, api_keys) == before
    # the anonymous forms too: a login without the pre-login token fails
    fresh = requests.Session()
    response = fresh.post(live.url + "/login", data={"email": email, "password": PASSWORD},
                          allow_redirects=False)
    assert response.status_code == 403 and SESSION_COOKIE not in response.cookies
    # and with the right token it works
    token = page_token(http, live.url + "/keys")
    response = http.post(live.url + "/keys", data={"name": "ok", "csrf_token": token})
    assert response.status_code == 200 and "mtai-" in response.text
    assert await _count(database_url, api_keys) == before + 1


async def test_session_cookie_flags_and_hashed_storage(live, database_url):
    _, email = await make_user(database_url)
    http = requests.Session()
    page = http.get(live.url + "/login")
    response = http.post(live.url + "/login", data={"csrf_token": csrf_of(page.text),
                                                    "email": email, "password": PASSWORD},
                         allow_redirects=False)
    cookie = _set_cookie(response, SESSION_COOKIE)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Secure" not in cookie  # plain http here
    token = http.cookies[SESSION_COOKIE]
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            stored = (await conn.execute(select(dashboard_sessions.c.id_hash))).scalars().all()
    finally:
        await db.dispose()
    assert token not in stored
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    # security headers on pages
    page = http.get(live.url + "/")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_secure_cookie_with_https_public_url(dash_settings, database_url):
    _, email = await make_user(database_url)
    settings = dash_settings(public_url="https://ai.example.com")
    with ThreadedServer(create_app(settings)) as live:
        page = requests.get(live.url + "/login")
        assert "Secure" in _set_cookie(page, ANON_CSRF_COOKIE)
        # requests keeps Secure cookies from plain http: hand the token back by hand
        response = requests.post(live.url + "/login", data={
            "csrf_token": csrf_of(page.text), "email": email, "password": PASSWORD},
            headers={"Cookie": f"{ANON_CSRF_COOKIE}={page.cookies[ANON_CSRF_COOKIE]}"},
            allow_redirects=False)
        session_cookie = _set_cookie(response, SESSION_COOKIE)
        assert "Secure" in session_cookie and "HttpOnly" in session_cookie


async def test_logout_ends_the_session(live, database_url):
    _, email = await make_user(database_url)
    http = login(live.url, email)
    token = http.cookies[SESSION_COOKIE]
    csrf = page_token(http, live.url + "/")
    assert http.post(live.url + "/logout", data={"csrf_token": csrf}).status_code == 200
    stale = requests.Session()
    stale.cookies.set(SESSION_COOKIE, token)
    response = stale.get(live.url + "/keys", allow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_wrong_passwords_are_throttled(dash_settings, database_url):
    _, email = await make_user(database_url)
    settings = dash_settings(dashboard={"login_failures_per_15min": 3})
    with ThreadedServer(create_app(settings)) as live:
        http = requests.Session()
        token = csrf_of(http.get(live.url + "/login").text)
        statuses = [http.post(live.url + "/login", data={
            "csrf_token": token, "email": email, "password": "wrong"}).status_code
            for _ in range(3)]
        assert statuses == [401, 401, 401]
        unknown = http.post(live.url + "/login", data={
            "csrf_token": token, "email": "nobody@example.com", "password": "x"})
        assert unknown.status_code == 401 and "Wrong email or password." in unknown.text
        # now even the right password waits
        response = http.post(live.url + "/login", data={
            "csrf_token": token, "email": email, "password": PASSWORD}, allow_redirects=False)
        assert response.status_code == 429 and SESSION_COOKIE not in http.cookies


async def test_login_next_never_leaves_the_site(live, database_url):
    _, email = await make_user(database_url)
    for target, expected in (("//evil.example.com/x", "/"), ("https://evil.example.com", "/"),
                             ("/\\evil.example.com", "/"), ("/usage", "/usage")):
        http = requests.Session()
        token = csrf_of(http.get(live.url + "/login").text)
        response = http.post(live.url + "/login", data={
            "csrf_token": token, "email": email, "password": PASSWORD, "next": target},
            allow_redirects=False)
        assert response.headers["location"] == expected, target


async def test_admin_pages_refuse_customers(live, database_url):
    account_id, email = await make_user(database_url)
    http = login(live.url, email)
    for path in ADMIN_GETS:
        response = http.get(live.url + path)
        assert response.status_code == 403, path
        assert "for the operators of the platform" in response.text
    token = page_token(http, live.url + "/")
    entries = await _count(database_url, ledger_entries)
    for path, data in (("/admin/codes", {"amount": "100", "count": "5"}),
                       (f"/admin/accounts/{account_id}/credit",
                        {"amount": "100", "reason": "self-service"}),
                       (f"/admin/accounts/{account_id}/disabled", {"disabled": "1"}),
                       (f"/admin/accounts/{account_id}/password", {"password": "x" * 12})):
        response = http.post(live.url + path, data={**data, "csrf_token": token})
        assert response.status_code == 403, path
    assert await _count(database_url, ledger_entries) == entries
    # and visitors who are not logged in are sent to the login page
    anonymous = requests.get(live.url + "/admin/accounts", allow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login?next=/admin/accounts"


async def test_one_customer_cannot_reach_another(live, database_url):
    alice_id, alice = await make_user(database_url)
    bob_id, bob = await make_user(database_url)
    db = Database(database_url, pool_size=1)
    try:
        await add_credit(db, alice_id, 1_000_000_000, note="test")
        await add_credit(db, bob_id, 1_000_000_000, note="test")
        key, secret = await create_key(db, alice_id, "alice-prod", 5_000_000_000)
    finally:
        await db.dispose()
    # Alice makes a request that shows in her usage
    headers = {"Authorization": f"Bearer {secret}"}
    chat = requests.post(live.url + "/api/chat-completions/", json=CHAT, headers=headers)
    assert chat.status_code == 200
    alice_http = login(live.url, alice)
    assert "gpt-4o-mini" in alice_http.get(live.url + "/usage").text

    bob_http = login(live.url, bob)
    token = page_token(bob_http, live.url + "/keys")
    keys_page = bob_http.get(live.url + "/keys").text
    assert key.id not in keys_page and "alice-prod" not in keys_page
    # acting on Alice's key by its id looks exactly like an unknown key
    for path, data in ((f"/keys/{key.id}/revoke", {}),
                       (f"/keys/{key.id}", {"name": "mine now", "spend_limit": "0"})):
        response = bob_http.post(live.url + path, data={**data, "csrf_token": token})
        assert response.status_code == 404, path
        unknown = bob_http.post(live.url + path.replace(key.id, "key_0000000000000000"),
                                data={**data, "csrf_token": token})
        assert unknown.status_code == 404 and \
            unknown.text.replace("key_0000000000000000", key.id).replace(  # each its own id
                unknown.headers["x-request-id"], "") == response.text.replace(
                response.headers["x-request-id"], "")
    db = Database(database_url, pool_size=1)
    try:
        (alice_key,) = [k for k in await list_keys(db, alice_id) if k.id == key.id]
    finally:
        await db.dispose()
    assert alice_key.revoked_at is None and alice_key.name == "alice-prod"
    assert alice_key.spend_limit == 5_000_000_000
    assert requests.get(live.url + "/api/balance/", headers=headers).status_code == 200
    # Bob's usage, CSV and overview show none of Alice's requests, whatever he asks for
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            (request_id,) = (await conn.execute(select(usage.c.request_id).where(
                usage.c.account_id == alice_id))).scalars().all()
    finally:
        await db.dispose()
    assert request_id in alice_http.get(live.url + "/usage.csv").text
    filtered = bob_http.get(live.url + "/usage?model=gpt-4o-mini").text
    assert "0 requests, $0.00" in visible(filtered) and "No requests yet." in filtered
    assert request_id not in bob_http.get(live.url + "/usage.csv?model=gpt-4o-mini").text
    assert "No requests yet." in bob_http.get(live.url + "/").text
    # a revoked key stops at once through the dashboard (the auth cache is evicted)
    alice_token = page_token(alice_http, live.url + "/keys")
    revoked = alice_http.post(live.url + f"/keys/{key.id}/revoke",
                              data={"csrf_token": alice_token})
    assert revoked.status_code == 200 and "Revoked alice-prod" in revoked.text
    after = requests.get(live.url + "/api/balance/", headers=headers)
    assert after.status_code == 401 and after.json()["error"]["code"] == "revoked_api_key"
    await assert_ledger_ok(database_url)


async def test_operator_sets_a_password_for_a_cli_account(live, database_url):
    _, admin = await make_user(database_url, admin=True)
    db = Database(database_url, pool_size=1)
    try:
        account = await create_account(db, "cli-made@example.com")
    finally:
        await db.dispose()
    admin_http = login(live.url, admin)
    token = page_token(admin_http, live.url + f"/admin/accounts/{account.id}")
    short = admin_http.post(live.url + f"/admin/accounts/{account.id}/password",
                            data={"csrf_token": token, "password": "short"})
    assert "Choose a password of 8" in short.text
    done = admin_http.post(live.url + f"/admin/accounts/{account.id}/password",
                           data={"csrf_token": token, "password": "a new password"})
    assert "Password set for cli-made@example.com." in done.text
    login(live.url, "cli-made@example.com", "a new password")


async def test_disabled_account_is_logged_out_and_refused(live, database_url):
    _, admin = await make_user(database_url, admin=True)
    user_id, user = await make_user(database_url)
    user_http = login(live.url, user)
    admin_http = login(live.url, admin)
    token = page_token(admin_http, live.url + f"/admin/accounts/{user_id}")
    response = admin_http.post(live.url + f"/admin/accounts/{user_id}/disabled",
                               data={"csrf_token": token, "disabled": "1"})
    assert response.status_code == 200 and "Account disabled." in response.text
    assert user_http.get(live.url + "/keys", allow_redirects=False).status_code == 303
    fresh = requests.Session()
    page = fresh.get(live.url + "/login")
    refused = fresh.post(live.url + "/login", data={"csrf_token": csrf_of(page.text),
                                                    "email": user, "password": PASSWORD})
    assert refused.status_code == 403 and "disabled" in refused.text


@pytest.mark.parametrize("signup", ["false"])
async def test_signup_can_be_closed(dash_settings, signup):
    with ThreadedServer(create_app(dash_settings(dashboard={"signup": signup}))) as live:
        http = requests.Session()
        assert http.get(live.url + "/signup").status_code == 403
        token = csrf_of(http.get(live.url + "/login").text)
        response = http.post(live.url + "/signup", data={
            "csrf_token": token, "email": "new@example.com", "password": PASSWORD,
            "password2": PASSWORD})
        assert response.status_code == 403


async def test_expired_sessions_are_refused_and_purged(live, database_url):
    _, email = await make_user(database_url)
    http = login(live.url, email)
    db = Database(database_url, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.execute(update(dashboard_sessions).values(
                expires_at=utcnow() - timedelta(seconds=1)))
        response = http.get(live.url + "/keys", allow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login")
        assert await purge_expired(db) == 1
    finally:
        await db.dispose()
    assert await _count(database_url, dashboard_sessions) == 0
