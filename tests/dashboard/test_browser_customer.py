"""A customer's whole day in a real headless Chromium: sign up, create a key, redeem a code
and see the balance change, chat in the playground, find the request in the usage table and
the chart, export CSV, log out."""

from __future__ import annotations

import re
from pathlib import Path

import requests
from sqlalchemy import select

from minitoolai.dashboard.codes import create_codes, display
from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, usage
from minitoolai.money import display_usd, format_usd
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import PASSWORD, arun
from tests.fakes.openai_upstream import count_prompt_tokens

CODE_VALUE = 5_000_000_000  # $5
GPT_4O_MINI = (150, 600)  # nanodollars per input / output token


async def _make_code(database_url: str) -> str:
    db = Database(database_url, pool_size=1)
    try:
        return display((await create_codes(db, CODE_VALUE, 1, batch="browser"))[0])
    finally:
        await db.dispose()


async def _account_state(database_url: str, email: str):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            account = (await conn.execute(select(accounts).where(accounts.c.email == email))
                       ).one()
            rows = (await conn.execute(select(usage).where(usage.c.account_id == account.id))
                    ).all()
    finally:
        await db.dispose()
    return account, rows


def test_customer_journey(live, new_page, database_url, upstream, tmp_path):
    base = live.url
    page = new_page()
    email = "journey@example.com"

    # sign up
    page.goto(base + "/")
    page.click("text=Create an account")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Sign up')")
    page.wait_for_url(base + "/")
    assert page.inner_text("#balance") == "$0.00"

    # create a key: shown once, and it works against the API
    page.click("nav >> text=API keys")
    page.fill("input[name=name]", "laptop")
    page.click("button:has-text('Create key')")
    secret = page.input_value("#secret")
    assert secret.startswith("mtai-")
    assert "laptop" in page.inner_text("table.keys-table")
    api = requests.get(base + "/api/balance/", headers={"Authorization": f"Bearer {secret}"})
    assert api.status_code == 200 and api.json()["balance"] == "0"
    page.goto(base + "/keys")  # the secret is gone after the response that showed it
    assert page.locator("#secret").count() == 0

    # redeem a code made by the operator: the balance changes
    code = arun(_make_code(database_url))
    page.click("nav >> text=Overview")
    page.fill("input[name=code]", code.lower().replace("-", " "))  # forgiving input
    page.click("button:has-text('Redeem')")
    assert "Code redeemed: +$5.00" in page.inner_text(".flash")
    assert page.inner_text("#balance") == "$5.00"
    page.fill("input[name=code]", code)  # single use
    page.click("button:has-text('Redeem')")
    assert "not valid or has already been used" in page.inner_text(".flash")
    assert page.inner_text("#balance") == "$5.00"

    # chat in the playground: the answer streams into the page
    page.click("nav >> text=Playground")
    page.select_option("#chat-model", "gpt-4o-mini")
    page.fill("#chat-input", "What's the largest U.S. state by area?")
    page.click("#chat-send")
    answer = page.locator(".msg.assistant").first
    answer.locator(".meta").wait_for()
    text = answer.inner_text()
    assert text.startswith("Alaska is the largest U.S.")
    assert re.search(r"\d+ in / 5 out tokens", text)
    page.screenshot(path=str(tmp_path / "playground-chat.png"))
    sent = upstream.requests[-1]
    assert sent["messages"][-1]["content"] == "What's the largest U.S. state by area?"

    # the request is charged exactly, to the playground key, and listed in usage
    account, rows = arun(_account_state(database_url, email))
    assert len(rows) == 1
    row = rows[0]
    prompt_tokens = count_prompt_tokens(sent["messages"])
    cost = prompt_tokens * GPT_4O_MINI[0] + 5 * GPT_4O_MINI[1]
    assert (row.model, row.prompt_tokens, row.completion_tokens, row.cost, row.status) == \
        ("gpt-4o-mini", prompt_tokens, 5, cost, "ok")
    assert account.balance == CODE_VALUE - cost and account.held == 0
    assert text.endswith(f"out tokens · charged ${format_usd(cost)}")  # what was taken
    page.click("nav >> text=Usage")
    table = page.inner_text("table.usage-table")
    # what a person reads (the display rule), and the exact cost on hover
    assert "gpt-4o-mini" in table and display_usd(cost) in table
    assert page.locator("table.usage-table .money").first.get_attribute("title") == \
        f"${format_usd(cost)}"
    assert "1 request," in page.inner_text("#usage-summary")
    bars = page.locator("svg.chart-wide rect")
    assert bars.count() == 1
    assert "gpt-4o-mini" in page.inner_text(".legend")
    # filters: another model shows nothing
    page.goto(base + "/usage?model=gpt-4o")
    assert "No requests yet." in page.inner_text("table.usage-table")
    page.goto(base + "/usage")

    # CSV export downloads the same row
    with page.expect_download() as download:
        page.click("text=Export CSV")
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("time_utc,request_id")
    assert f",gpt-4o-mini,{prompt_tokens},5,0,0,{format_usd(cost)},no,ok," in csv_text

    # the keys page names the playground key and shows what it spent
    page.click("nav >> text=API keys")
    keys = page.inner_text("table.keys-table")
    assert "playground" in keys and display_usd(cost) in keys

    # the docs carry this server's URL and the live prices
    page.click("nav >> text=API docs")
    docs = page.inner_text("main")
    assert f"{base}/api/chat-completions/" in docs
    assert "gpt-4o-mini" in page.inner_text("table.prices")
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)

    # log out: the dashboard asks for a login again
    page.click("button:has-text('Log out')")
    page.wait_for_url(base + "/login")
    page.goto(base + "/keys")
    assert page.url.startswith(base + "/login")
    arun(assert_ledger_ok(database_url))
