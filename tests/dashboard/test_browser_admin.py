"""The operator's pages in headless Chromium: platform charts, account search, a credit
adjustment with its reason in the ledger, disabling an account, a batch of codes, the catalog
with provider health and the image queue; and a customer refused at /admin."""

from __future__ import annotations

from sqlalchemy import select

from minitoolai.accounts.store import get_account
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import arun, log_in_page, make_user


async def _ledger(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        account = await get_account(db, account_id)
        async with db.read() as conn:
            entries = (await conn.execute(select(ledger_entries).where(
                ledger_entries.c.account_id == account_id))).all()
    finally:
        await db.dispose()
    return account, entries


def test_operator_pages(live, new_page, database_url):
    _, admin = arun(make_user(database_url, admin=True))
    customer_id, customer = arun(make_user(database_url, email="carol@example.com"))
    base = live.url

    # a customer is refused
    page = new_page()
    log_in_page(page, base, customer)
    assert page.locator("nav >> text=Admin").count() == 0
    response = page.goto(base + "/admin")
    assert response.status == 403
    assert "Not allowed" in page.inner_text("h1")

    page = new_page()
    log_in_page(page, base, admin)
    page.click("nav >> text=Admin")
    assert page.locator("svg.chart-wide").count() == 2  # and a phone-sized drawing of each
    assert "Accounts" in page.inner_text(".stats")

    # search, open, adjust with a reason
    page.click(".subnav >> text=Accounts")
    page.fill("input[name=q]", "carol")
    page.click("button:has-text('Search')")
    rows = page.locator("table.data tbody tr")
    assert rows.count() == 1
    page.click("text=carol@example.com")
    page.fill("input[name=amount]", "7.25")
    page.fill("input[name=reason]", "welcome gift")
    page.click("button:has-text('Adjust')")
    assert "Adjusted by +$7.25; balance $7.25." in page.inner_text(".flash")
    assert page.inner_text("#balance") == "$7.25"
    page.fill("input[name=amount]", "-100")
    page.fill("input[name=reason]", "too much")
    page.click("button:has-text('Adjust')")
    assert "below zero" in page.inner_text(".flash")
    account, entries = arun(_ledger(database_url, customer_id))
    assert account.balance == 7_250_000_000
    assert [(e.kind, e.amount) for e in entries] == [("adjustment", 7_250_000_000)]
    assert (entries[0].note, entries[0].created_by) == ("welcome gift", admin)
    # the credit history on the page lists it with its reason and who made it
    history = page.inner_text("#credit-history table")
    assert "+$7.25" in history and "welcome gift" in history and admin in history

    # disable (the confirm dialog is accepted), then enable again
    page.click("button:has-text('Disable account')")
    assert "Account disabled." in page.inner_text(".flash")
    assert arun(_ledger(database_url, customer_id))[0].disabled
    page.click("button:has-text('Enable account')")
    assert "Account enabled." in page.inner_text(".flash")

    # a batch of codes, shown once in full and listed
    page.click(".subnav >> text=Codes")
    page.fill("input[name=amount]", "3")
    page.fill("input[name=count]", "4")
    page.fill("input[name=batch]", "meetup")
    page.click("button:has-text('Create codes')")
    codes = page.input_value("#new-codes textarea").split("\n")
    assert len(codes) == 4 and all(len(c) == 19 for c in codes)
    page.click("text=Unused")
    listed = page.inner_text("table.codes-table")
    # listed by their hint only: the full codes were shown once and are not kept
    assert all("XXXX-XXXX-XXXX-" + c[-4:] in listed and c not in listed for c in codes)
    assert "meetup" in listed

    # catalog, provider health, image queue
    page.click(".subnav >> text=Catalog")
    text = page.inner_text("main")
    assert "openai" in text and "gpt-4o-mini" in text and "realvision" in text
    assert "Image queue" in text and "queued" in text
    arun(assert_ledger_ok(database_url))
