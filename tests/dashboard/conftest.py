"""Fixtures of the dashboard tests: a live server with the chat gateway pointed at a fake
OpenAI upstream and Stripe at a fake on loopback, logged-in `requests` sessions, and a real
headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import html as htmllib
import re
import shutil
import uuid

import pytest
import requests

from minitoolai.accounts.store import create_account, set_account_flags
from minitoolai.app import create_app
from minitoolai.dashboard.passwords import set_password
from minitoolai.db.engine import Database
from minitoolai.ledger.credits import add_credit
from tests.dashboard.fake_stripe import FakeStripe
from tests.fakes.openai_upstream import FakeOpenAI
from tests.servers import ThreadedServer, free_port

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def upstream():
    with FakeOpenAI(api_key="sk-upstream") as fake:
        yield fake


@pytest.fixture(scope="session")
def fake_stripe():
    with FakeStripe() as fake:
        yield fake


@pytest.fixture
def dash_settings(make_settings, upstream, fake_stripe):
    """Settings factory: chat via the fake upstream, Stripe via the fake, instant images."""

    def make(**overrides):
        chat = {"providers": {"openai": {"base_url": upstream.base_url,
                                         "api_key": "sk-upstream", "read_timeout": 5}},
                "builtin_local_model": False}
        dashboard = {"stripe": {"secret_key": fake_stripe.secret_key,
                                "webhook_secret": fake_stripe.webhook_secret,
                                "api_base": fake_stripe.base_url}}
        extra = dict(overrides.pop("dashboard", {}))
        dashboard["stripe"].update(extra.pop("stripe", {}))
        dashboard.update(extra)
        images = {"models": {"realvision": {"backend": "instant"}}}
        return make_settings(chat=chat, dashboard=dashboard, images=images, **overrides)

    return make


@pytest.fixture
def live(dash_settings):
    """The server, with public_url set to its own address so image links resolve."""
    port = free_port()
    settings = dash_settings(public_url=f"http://127.0.0.1:{port}")
    with ThreadedServer(create_app(settings), port=port) as server:
        yield server


def arun(coro):
    """Run a coroutine to completion from a sync test, even one driving Playwright (whose
    sync API keeps an event loop running in this thread): in a thread of its own."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def make_user(database_url: str, *, admin: bool = False, email: str | None = None,
                    password: str = PASSWORD, credit_nano: int = 0) -> tuple[int, str]:
    """An account with a dashboard password (the admin role, some credit); returns (id,
    email)."""
    db = Database(database_url, pool_size=1)
    try:
        email = email or f"{'admin' if admin else 'user'}-{uuid.uuid4().hex[:8]}@example.com"
        account = await create_account(db, email, "Test")
        await set_password(db, account.id, password)
        if admin:
            await set_account_flags(db, account.id, is_admin=True)
        if credit_nano:
            await add_credit(db, account.id, credit_nano, note="test")
    finally:
        await db.dispose()
    return account.id, email


def visible(html: str) -> str:
    """What a person reads of some HTML: the text without its tags (money is a span whose
    title holds the exact amount)."""
    return htmllib.unescape(re.sub(r"<[^>]+>", "", html))


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(base: str, email: str, password: str = PASSWORD) -> requests.Session:
    """A requests session logged in through the real form (CSRF cookie and all)."""
    http = requests.Session()
    page = http.get(base + "/login")
    response = http.post(base + "/login", data={"csrf_token": csrf_of(page.text),
                                                "email": email, "password": password},
                         allow_redirects=False)
    assert response.status_code == 303, response.text
    return http


def log_in_page(page, base: str, email: str) -> None:
    """Log in through the login form of a browser page."""
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(base + "/")


def page_token(http: requests.Session, url: str) -> str:
    """The CSRF token printed in a logged-in page."""
    response = http.get(url)
    assert response.status_code == 200, response.text
    return csrf_of(response.text)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium per test module. Debian's chromium must be installed (.ci/run
    does); without it these tests fail in CI and are skipped on a developer's machine.

    Module scope, not session: Playwright's sync API keeps an event loop running in the main
    thread while it is open, which would stop every async test that runs after it."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed (pip install -e .[dashboard])"
    if missing is None and not shutil.which(CHROMIUM):
        missing = f"{CHROMIUM} is missing (apt-get install chromium)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail("browser tests cannot run: " + missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser):
    """new_page(width=1280, height=900) -> a page in a fresh context (its own cookies)."""
    contexts = []

    def make(width: int = 1280, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # data-confirm forms
        return page

    yield make
    for context in contexts:
        context.close()
