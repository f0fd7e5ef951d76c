"""Hostile input to the dashboard (issue 15): strictly parsed query and form values, text that
every database stores, and a login throttle that slows a guesser without locking the owner
out. Bodies too big for the routes anyone can call (the login form, the Stripe webhook):
tests/test_memory.py, against a server process of its own whose memory is measured."""

from __future__ import annotations

import requests

from minitoolai.app import create_app
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import PASSWORD, csrf_of, login, make_user, page_token
from tests.servers import ThreadedServer

WEBHOOK = "/billing/stripe/webhook"


def test_webhook_refuses_malformed_signatures(live):
    for header in ("t=²,v1=00", "t=" + "1" * 5000 + ",v1=00", "t=1,v1=é", "t=,v1=00",
                   "t=-5,v1=00"):
        response = requests.post(live.url + WEBHOOK, data=b"{}", headers={
            "Content-Type": "application/json", "Stripe-Signature": header.encode()})
        assert response.status_code == 403, (header[:20], response.text)
        assert set(response.json()) == {"error"}


async def test_bad_query_and_form_values_are_clear_400s(live, database_url):
    account_id, email = await make_user(database_url)
    _, admin_email = await make_user(database_url, admin=True)
    http = login(live.url, email)
    for query, words in (("before=²", "before must be a whole number"),
                         ("before=" + "9" * 20, "before must be a whole number"),
                         ("end=9999-12-31", "end must be a date"),
                         ("start=0001-01-01", "start must be a date"),
                         ("start=20240101", "start must be a date"),
                         ("model=%00", "NUL"), ("model=a%00b", "NUL")):
        for path in ("/usage",) if query.startswith("before") else ("/usage", "/usage.csv"):
            response = http.get(f"{live.url}{path}?{query}")
            assert response.status_code == 400, (path, query, response.text[:300])
            assert words in response.text, (path, query)
    # the largest valid values still work
    assert http.get(live.url + "/usage?before=" + "9" * 18 + "&end=9998-12-31"
                    ).status_code == 200
    # the credit history's cursor too (found by tests/test_fuzz.py: "²".isdigit() is true, and
    # int() refuses 5,000 digits: both were 500s)
    for before in ("²", "1" * 5000, "9" * 20, "-1"):
        response = http.get(live.url + "/credits", params={"before": before})
        assert response.status_code == 400, (before[:10], response.text[:300])
        assert "before must be a whole number" in response.text
    assert http.get(live.url + "/credits?before=" + "9" * 18).status_code == 200

    token = page_token(http, live.url + "/keys")
    # exponents are not plain decimal USD; a plain number over the largest amount is refused
    for form, words in (({"name": "k", "spend_limit": "1e400"}, "not an amount of money"),
                        ({"name": "k", "spend_limit": "1e999999999"}, "not an amount of money"),
                        ({"name": "k", "spend_limit": "9" * 400}, "over the largest amount"),
                        ({"name": "k\x00", "spend_limit": ""}, "NUL")):
        response = http.post(live.url + "/keys", data={**form, "csrf_token": token})
        assert response.status_code == 400, (form, response.text[:300])
        assert words in response.text, form
    assert http.post(live.url + "/keys/%00", data={"csrf_token": token, "name": "x"}
                     ).status_code == 400

    admin = login(live.url, admin_email)
    token = page_token(admin, live.url + "/admin/codes")
    for count in ("²", "1" * 5000):
        response = admin.post(live.url + "/admin/codes", data={
            "csrf_token": token, "amount": "1", "count": count})
        assert response.status_code == 400 and "count must be a whole number" in response.text
    response = admin.post(live.url + "/admin/codes", data={
        "csrf_token": token, "amount": "9" * 400, "count": "1"})
    assert response.status_code == 400 and "over the largest amount" in response.text
    for before in ("²", "1" * 5000):
        response = admin.get(f"{live.url}/admin/accounts/{account_id}",
                             params={"entries_before": before})
        assert response.status_code == 400, (before[:10], response.text[:300])
        assert "entries_before must be a whole number" in response.text
    assert admin.get(f"{live.url}/admin/accounts/{account_id}?entries_before=" + "9" * 18
                     ).status_code == 200
    for path in ("/admin/accounts/²", "/admin/accounts/" + "1" * 30,
                 "/admin/accounts/" + "9" * 12, f"/admin/accounts/{2**31}"):
        assert admin.get(live.url + path).status_code == 404
    credit = admin.post(f"{live.url}/admin/accounts/{account_id}/credit", data={
        "csrf_token": token, "amount": "9" * 400, "reason": "test"})
    assert credit.status_code == 200 and "over the largest amount" in credit.text
    nul_reason = admin.post(f"{live.url}/admin/accounts/{account_id}/credit", data={
        "csrf_token": token, "amount": "1", "reason": "a\x00b"})
    assert nul_reason.status_code == 400
    assert admin.get(live.url + "/admin/accounts?q=%00").status_code == 400
    await assert_ledger_ok(database_url)


async def test_nul_in_login_and_signup_fields(live, database_url):
    _, email = await make_user(database_url)
    for path, form in (("/login", {"email": email + "\x00", "password": PASSWORD}),
                       ("/login", {"email": email, "password": "x\x00"}),
                       ("/signup", {"email": "new@example.com", "name": "N\x00",
                                    "password": PASSWORD, "password2": PASSWORD}),
                       ("/signup", {"email": "new\x00@example.com", "name": "N",
                                    "password": PASSWORD, "password2": PASSWORD})):
        http = requests.Session()
        token = csrf_of(http.get(live.url + path).text)
        response = http.post(live.url + path, data={**form, "csrf_token": token},
                             allow_redirects=False)
        assert response.status_code == 400 and "NUL" in response.text, (path, form)


async def test_guessing_is_throttled_but_the_owner_still_logs_in(dash_settings, database_url):
    """Wrong passwords from one address slow that address (per address and account, with
    backoff); the account's owner, from their own address, logs in at once."""
    _, email = await make_user(database_url)
    settings = dash_settings(dashboard={"login_failures_per_15min": 3})
    with ThreadedServer(create_app(settings)) as live:
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 (a reverse proxy): two clients
        guesser = requests.Session()
        guesser.headers["X-Forwarded-For"] = "203.0.113.9"
        token = csrf_of(guesser.get(live.url + "/login").text)

        def guess(password: str) -> requests.Response:
            return guesser.post(live.url + "/login", data={
                "csrf_token": token, "email": email, "password": password},
                allow_redirects=False)

        assert [guess(f"wrong{i}").status_code for i in range(3)] == [401, 401, 401]
        blocked = guess("wrong3")
        assert blocked.status_code == 429 and "Wait 1 minute" in blocked.text
        assert 0 < int(blocked.headers["retry-after"]) <= 30
        # even the right password waits, from the guesser's address
        assert guess(PASSWORD).status_code == 429
        # the owner is not locked out
        owner = requests.Session()
        owner.headers["X-Forwarded-For"] = "198.51.100.7"
        page = owner.get(live.url + "/login")
        response = owner.post(live.url + "/login", data={
            "csrf_token": csrf_of(page.text), "email": email, "password": PASSWORD},
            allow_redirects=False)
        assert response.status_code == 303, response.text[:300]


async def test_forms_take_no_files_and_bounded_fields(live):
    http = requests.Session()
    token = csrf_of(http.get(live.url + "/login").text)
    upload = http.post(live.url + "/login", data={"csrf_token": token},
                       files={"email": ("a.txt", b"x" * 1000)}, allow_redirects=False)
    assert upload.status_code == 400, upload.text[:300]
    many = http.post(live.url + "/login", data={"csrf_token": token,
                                                **{f"f{i}": "1" for i in range(300)}},
                     files={"x": (None, "y")}, allow_redirects=False)
    assert many.status_code == 400, many.text[:300]
