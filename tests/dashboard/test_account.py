"""Account self-service over plain HTTP: change the password, log out everywhere, the
password reset by a one-time link (a real SMTP server on loopback, and the operator's CLI),
inline field errors, and HTML error pages for the dashboard while the APIs keep JSON."""

from __future__ import annotations

import logging
import os

import requests
from sqlalchemy import select

from minitoolai.app import create_app
from minitoolai.dashboard.resets import create_reset
from minitoolai.dashboard.tables import dashboard_sessions, password_resets
from minitoolai.db.engine import Database
from tests.dashboard.conftest import PASSWORD, csrf_of, login, make_user, page_token, visible
from tests.dashboard.mailbox import expire_resets as _expire_resets
from tests.dashboard.mailbox import live_mail, mailbox, reset_link  # noqa: F401 - fixtures
from tests.redis_fixtures import REDIS_URL, TEST_REDIS_TIMEOUT, redis_prefix  # noqa: F401
from tests.servers import ThreadedServer, run_cli

NEW_PASSWORD = "a brand new passphrase"


async def _rows(database_url: str, table, **where) -> list:
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            query = select(table)
            for name, value in where.items():
                query = query.where(table.c[name] == value)
            return (await conn.execute(query)).all()
    finally:
        await db.dispose()


def _cannot_log_in(base: str, email: str, password: str) -> None:
    http = requests.Session()
    page = http.get(base + "/login")
    response = http.post(base + "/login", data={"csrf_token": csrf_of(page.text),
                                                "email": email, "password": password},
                         allow_redirects=False)
    assert response.status_code == 401, response.status_code


def _logged_out(http: requests.Session, base: str) -> bool:
    response = http.get(base + "/keys", allow_redirects=False)
    return response.status_code == 303 and response.headers["location"].startswith("/login")


async def test_change_password(live, database_url):
    _, email = await make_user(database_url)
    http, other = login(live.url, email), login(live.url, email)
    url = live.url + "/account/password"

    def change(current, password, again, session=http):
        return session.post(url, data={"csrf_token": page_token(session, live.url + "/account"),
                                       "current": current, "password": password,
                                       "password2": again}, allow_redirects=False)

    # each mistake: the form again, the error under its field, nothing changed
    for args, field, words in [(("wrong password", NEW_PASSWORD, NEW_PASSWORD), "current",
                                "not your current password"),
                               ((PASSWORD, "short", "short"), "password", "at least 8"),
                               ((PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x"), "password2",
                                "differ")]:
        response = change(*args)
        assert response.status_code == 400
        assert f'name="{field}" id="field-{field}"' in response.text
        assert f'aria-invalid="true" aria-describedby="field-{field}-error"' in response.text
        assert f'id="field-{field}-error" role="alert">' in response.text
        assert words in visible(response.text)
    assert not _logged_out(other, live.url)

    response = change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    assert "Your password is changed" in visible(http.get(live.url + "/account").text)
    assert not _logged_out(http, live.url)  # this browser stays logged in
    assert _logged_out(other, live.url)  # every other one is out
    _cannot_log_in(live.url, email, PASSWORD)
    login(live.url, email, NEW_PASSWORD)


async def test_change_password_gives_this_browser_a_new_session(live, database_url):
    """A copy of this browser's session cookie (stolen: the reason to change a password)
    stops working too; the browser itself stays logged in with a new cookie and token."""
    _, email = await make_user(database_url)
    http = login(live.url, email)
    old_cookie = http.cookies.get("mtai_session")
    old_token = page_token(http, live.url + "/account")
    response = http.post(live.url + "/account/password", data={
        "csrf_token": old_token, "current": PASSWORD, "password": NEW_PASSWORD,
        "password2": NEW_PASSWORD}, allow_redirects=False)
    assert response.status_code == 303
    assert http.cookies.get("mtai_session") not in (None, old_cookie)
    assert not _logged_out(http, live.url)
    assert page_token(http, live.url + "/account") != old_token
    thief = requests.Session()
    thief.cookies.set("mtai_session", old_cookie)
    assert _logged_out(thief, live.url)


async def test_logout_everywhere(live, database_url):
    account_id, email = await make_user(database_url)
    sessions = [login(live.url, email) for _ in range(3)]
    assert "logged in on 3 browsers" in visible(sessions[0].get(live.url + "/account").text)
    response = sessions[0].post(live.url + "/account/logout-everywhere", data={
        "csrf_token": page_token(sessions[0], live.url + "/account")}, allow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert all(_logged_out(http, live.url) for http in sessions)
    assert await _rows(database_url, dashboard_sessions, account_id=account_id) == []
    # without the form's token nothing happens
    again = login(live.url, email)
    response = again.post(live.url + "/account/logout-everywhere", data={})
    assert response.status_code == 403 and "text/html" in response.headers["content-type"]
    assert not _logged_out(again, live.url)


def _forgot(base: str, email: str) -> requests.Response:
    http = requests.Session()
    page = http.get(base + "/forgot")
    return http.post(base + "/forgot", data={"csrf_token": csrf_of(page.text), "email": email})


async def test_reset_link_by_email(live_mail, database_url, mailbox):  # noqa: F811
    account_id, email = await make_user(database_url)
    base = live_mail.url
    other = login(base, email)

    # the same answer for an unknown address, and no email for it
    unknown = _forgot(base, "nobody-here@example.com")
    known = _forgot(base, email.upper())
    assert unknown.status_code == known.status_code == 200
    assert visible(unknown.text) == visible(known.text)
    assert "If an account uses that address" in visible(known.text)
    recipients, message = mailbox.next()
    assert recipients == [email] and message["To"] == email
    assert message["From"] == "MiniToolAI <no-reply@example.com>"
    link = reset_link(message)
    assert link.startswith(base + "/reset/")
    # stored only as a hash
    rows = await _rows(database_url, password_resets, account_id=account_id)
    assert len(rows) == 1 and rows[0].token_hash not in link and rows[0].used_at is None

    http = requests.Session()
    form = http.get(link)
    assert form.status_code == 200 and email in visible(form.text)
    token = csrf_of(form.text)
    bad = http.post(link, data={"csrf_token": token, "password": "short", "password2": "short"})
    assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text
    done = http.post(link, data={"csrf_token": token, "password": NEW_PASSWORD,
                                 "password2": NEW_PASSWORD}, allow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/login"
    assert _logged_out(other, base)
    _cannot_log_in(base, email, PASSWORD)
    login(base, email, NEW_PASSWORD)

    # once only
    second = requests.get(link)
    assert second.status_code == 410 and "does not work any more" in visible(second.text)
    reuse = http.post(link, data={"csrf_token": token, "password": "another one entirely",
                                  "password2": "another one entirely"})
    assert reuse.status_code == 410
    _cannot_log_in(base, email, "another one entirely")

    # an expired link fails
    _forgot(base, email)
    _, message = mailbox.next()
    expired = reset_link(message)
    assert requests.get(expired).status_code == 200
    await _expire_resets(database_url)
    assert requests.get(expired).status_code == 410

    # a password change kills the links sent before it
    _forgot(base, email)
    _, message = mailbox.next()
    pending = reset_link(message)
    assert requests.get(pending).status_code == 200
    http = login(base, email, NEW_PASSWORD)
    http.post(base + "/account/password", data={
        "csrf_token": page_token(http, base + "/account"), "current": NEW_PASSWORD,
        "password": PASSWORD, "password2": PASSWORD})
    assert requests.get(pending).status_code == 410
    assert mailbox.empty()


async def test_reset_requests_are_throttled(dash_settings, database_url, mailbox):  # noqa: F811
    _, email = await make_user(database_url)
    settings = dash_settings(smtp=mailbox.settings(),
                             dashboard={"reset_requests_per_hour": 2})
    with ThreadedServer(create_app(settings)) as server:
        assert [_forgot(server.url, email).status_code for _ in range(3)] == [200, 200, 429]
        refused = _forgot(server.url, "someone-else@example.com")
        assert refused.status_code == 200  # the count is per address, and per client x5
        bad = _forgot(server.url, "not an address")
        assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text
    assert len([mailbox.next() for _ in range(2)]) == 2


async def test_reset_throttle_is_shared_through_redis(
        dash_settings, database_url, mailbox, redis_prefix):  # noqa: F811
    """Two servers on one Redis count one email address's requests together."""
    _, email = await make_user(database_url)
    settings = dash_settings(smtp=mailbox.settings(), redis_url=REDIS_URL,
                             redis_key_prefix=redis_prefix,
                             redis_timeout_seconds=TEST_REDIS_TIMEOUT,
                             dashboard={"reset_requests_per_hour": 2})
    with ThreadedServer(create_app(settings)) as one, ThreadedServer(create_app(settings)) as two:
        assert _forgot(one.url, email).status_code == 200
        assert _forgot(two.url, email).status_code == 200
        assert _forgot(one.url, email).status_code == 429
        assert _forgot(two.url, email).status_code == 429
    assert len([mailbox.next() for _ in range(2)]) == 2


async def test_reset_link_from_the_cli(live, database_url, tmp_path):
    _, email = await make_user(database_url)
    env = {**os.environ, "MINITOOLAI_DATABASE_URL": database_url,
           "MINITOOLAI_DATA_DIR": str(tmp_path / "data"), "OPENAI_API_KEY": "",
           "MINITOOLAI_PUBLIC_URL": live.url}
    result = run_cli(env, "accounts", "reset-link", email)
    assert result.returncode == 0, result.stderr
    link = result.stdout.strip()
    assert link.startswith(live.url + "/reset/")
    http = requests.Session()
    form = http.get(link)
    response = http.post(link, data={"csrf_token": csrf_of(form.text), "password": NEW_PASSWORD,
                                     "password2": NEW_PASSWORD}, allow_redirects=False)
    assert response.status_code == 303
    login(live.url, email, NEW_PASSWORD)
    assert requests.get(link).status_code == 410
    unknown = run_cli(env, "accounts", "reset-link", "nobody@example.com")
    assert unknown.returncode == 1 and "no account" in unknown.stderr


async def test_without_smtp_the_page_sends_to_the_operator(live, database_url):
    response = requests.get(live.url + "/forgot")
    assert "accounts reset-link" in visible(response.text)
    assert 'action="/forgot"' not in response.text


async def test_inline_errors_on_signup_and_login(live, database_url):
    _, email = await make_user(database_url)
    http = requests.Session()
    token = csrf_of(http.get(live.url + "/signup").text)
    for data, field in [({"email": "x@example.com", "password": "short", "password2": "short"},
                         "password"),
                        ({"email": "x@example.com", "password": PASSWORD, "password2": "other"},
                         "password2"),
                        ({"email": email, "password": PASSWORD, "password2": PASSWORD},
                         "email")]:
        response = http.post(live.url + "/signup", data={"csrf_token": token, **data})
        assert response.status_code == 400
        assert f'aria-describedby="field-{field}-error"' in response.text
    # an empty form: every field that is wrong says so at once
    response = http.post(live.url + "/signup", data={"csrf_token": token, "email": "",
                                                     "password": "", "password2": ""})
    assert response.status_code == 400
    assert 'aria-describedby="field-email-error"' in response.text
    assert 'aria-describedby="field-password-error"' in response.text
    assert "Not a valid email address" in visible(response.text)
    token = csrf_of(http.get(live.url + "/login").text)
    response = http.post(live.url + "/login", data={"csrf_token": token, "email": email,
                                                    "password": "wrong"})
    assert response.status_code == 401
    assert 'aria-describedby="field-password-error"' in response.text
    assert "Wrong email or password." in visible(response.text)


async def test_bad_card_amount_is_an_inline_error(live, database_url):
    _, email = await make_user(database_url)
    http = login(live.url, email)
    for amount, words in [("lots", "Not an amount"), ("0.001", "between $1.00 and $1,000.00")]:
        response = http.post(live.url + "/topup/checkout", data={
            "csrf_token": page_token(http, live.url + "/"), "amount": amount})
        assert response.status_code == 400
        assert 'id="field-amount-error" role="alert"' in response.text
        assert words in visible(response.text)
        assert f'value="{amount}"' in response.text  # what was typed stays in the field
        assert 'id="balance"' in response.text  # the overview, not a bare error page


async def test_error_pages_are_html_on_the_dashboard_json_on_the_apis(live, database_url):
    _, email = await make_user(database_url)
    http = login(live.url, email)

    def html(response, status, heading):
        assert response.status_code == status
        assert response.headers["content-type"].startswith("text/html")
        assert f"<h1>{heading}</h1>" in response.text
        assert response.headers["x-request-id"] in response.text
        assert "Content-Security-Policy" in response.headers
        return response

    page = html(http.get(live.url + "/no/such/page"), 404, "Page not found")
    assert 'href="/account"' in page.text  # the logged-in navigation is there
    html(requests.get(live.url + "/nope"), 404, "Page not found")
    wrong = html(http.get(live.url + "/logout"), 405, "Not allowed here")
    assert wrong.headers["allow"] == "POST"  # RFC 9110: a 405 names the methods it takes
    html(http.post(live.url + "/keys", data={"name": "x"}), 403, "Not allowed")
    html(http.post(live.url + "/keys", data={"csrf_token": "x", "name": "y" * 70_000}), 413,
         "Too large")
    for path in ("/api/nope", "/v1/nope", "/health/nope", "/api/openapi.jsonx"):
        response = http.get(live.url + path)
        assert response.status_code == 404 and response.json()["error"]["code"] == \
            "unknown_route", path
    wrong = http.get(live.url + "/api/chat-completions/")
    assert wrong.status_code == 405 and "POST" in wrong.headers["allow"]
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    response = http.get(live.url + "/nope", headers={"Accept": "application/json"})
    assert response.json()["error"]["code"] == "unknown_route"
    assert http.get(live.url + "/v1/models/x", params={"a": "b"}).headers[
        "content-type"].startswith("application/json")


async def test_an_unexpected_error_is_a_logged_html_page(dash_settings, caplog):
    app = create_app(dash_settings())

    async def broken(request):
        raise RuntimeError("a bug in a page")

    # a route that fails as a bug would: the same app, one more route
    app.add_route("/broken", broken, methods=["GET"])
    app.add_route("/api/broken", broken, methods=["GET"])
    with ThreadedServer(app) as server:
        response = requests.get(server.url + "/broken")
        assert response.status_code == 500
        assert response.headers["content-type"].startswith("text/html")
        request_id = response.headers["x-request-id"]
        assert request_id in response.text and "Something went wrong" in response.text
        assert "a bug in a page" not in response.text
        api = requests.get(server.url + "/api/broken")
        assert api.status_code == 500 and api.json()["error"]["message"] == \
            "internal server error"
    assert any("GET /broken failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_reset_tokens_stay_out_of_the_access_log(live, database_url, caplog):
    """A live reset link in a log line would let anyone who reads the logs (an aggregator,
    a support desk) set the password of whoever opened the link and has not used it yet."""
    account_id, _ = await make_user(database_url)
    db = Database(database_url, pool_size=1)
    try:
        token = await create_reset(db, account_id, 60)
    finally:
        await db.dispose()
    caplog.set_level(logging.INFO, logger="minitoolai.access")
    response = requests.get(live.url + "/reset/" + token)
    assert response.status_code == 200
    lines = [r for r in caplog.records if r.name == "minitoolai.access"
             and r.request_id == response.headers["x-request-id"]]
    assert len(lines) == 1
    assert token not in lines[0].getMessage() and token not in str(lines[0].access)
    assert lines[0].access["path"].startswith("/reset/")
