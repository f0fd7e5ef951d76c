"""The operator's pages in headless Chromium: platform charts, account search, a credit
adjustment with its reason in the ledger, disabling an account, a batch of codes, the catalog
with provider health and the image queue; and a customer refused at /admin. At desktop and
phone widths: revoking a customer's key, exporting its usage, voiding codes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select

from minitoolai.accounts.store import create_key, get_account
from minitoolai.dashboard.codes import create_codes, list_codes, redeem
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries, usage
from tests.conftest import assert_ledger_ok
from tests.dashboard.browser_checks import no_sideways_scroll, rgb
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


async def _customer_with_key_usage_and_codes(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        key, _ = await create_key(db, account_id, "ci runner")
        async with db.write() as conn:
            await conn.execute(insert(usage), [
                {"request_id": f"b{account_id}-{i}", "account_id": account_id,
                 "key_id": key.id, "created_at": datetime(2026, 11, 3, 12, i, tzinfo=UTC),
                 "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini",
                 "prompt_tokens": i, "completion_tokens": 1, "cost": 0, "status": "ok"}
                for i in range(3)])
        codes = await create_codes(db, 4_000_000_000, 2, batch=f"b{account_id}")
        listed = await list_codes(db, batch=f"b{account_id}")
    finally:
        await db.dispose()
    return key, codes, {c.hint: c for c in listed}


async def _redeem(database_url: str, account_id: int, code: str) -> None:
    db = Database(database_url, pool_size=1)
    try:
        await redeem(db, account_id, code)
    finally:
        await db.dispose()


@pytest.mark.parametrize(("width", "height"), [(1366, 900), (390, 844)])
def test_operator_revokes_exports_and_voids(live, new_page, database_url, tmp_path, width,
                                            height):
    """At desktop and phone widths: the operator revokes a customer's key (a confirmation,
    the key marked revoked and refused by the API), downloads the account's usage as CSV,
    voids an unused code (a confirmation, the code marked voided), and trying to void a code
    the customer redeemed meanwhile is an error notice, in red, announced."""
    _, admin = arun(make_user(database_url, admin=True))
    customer_id, customer = arun(make_user(database_url))
    key, codes, by_hint = arun(_customer_with_key_usage_and_codes(database_url, customer_id))
    base = live.url
    page = new_page(width, height)
    log_in_page(page, base, admin)

    page.goto(base + f"/admin/accounts/{customer_id}")
    item = page.locator(f"li[data-key-id='{key.id}']")
    assert "ci runner" in item.inner_text()
    item.locator("button:has-text('Revoke')").click()  # the confirm dialog is accepted
    flash = page.locator(".flash")
    assert "Revoked ci runner" in flash.inner_text() and flash.get_attribute("role") == "status"
    red, green, _ = rgb(page, ".flash")
    assert green > red
    assert page.locator(f"li[data-key-id='{key.id}'] .pill.bad").inner_text() == "revoked"
    assert page.locator(f"li[data-key-id='{key.id}'] button").count() == 0
    no_sideways_scroll(page)

    with page.expect_download() as download:
        page.click(f"a[href^='/admin/accounts/{customer_id}/usage.csv']")
    path = tmp_path / f"usage-{width}.csv"
    download.value.save_as(path)
    assert download.value.suggested_filename == f"minitoolai-usage-{customer_id}.csv"
    lines = path.read_text().strip().splitlines()
    assert lines[0].startswith("time_utc,request_id,key_id") and len(lines) == 4
    assert all(key.id in line for line in lines[1:])

    page.goto(base + "/admin/codes?state=unused")
    first, second = (by_hint[c[-4:]] for c in codes)
    page.locator(f"tr[data-code-id='{first.id}'] button:has-text('Void')").click()
    flash = page.locator(".flash")
    assert f"Voided {first.display}" in flash.inner_text()
    assert "flash-error" not in flash.get_attribute("class")
    assert page.locator(f"tr[data-code-id='{first.id}']").count() == 0  # no longer unused
    page.goto(base + "/admin/codes?state=voided")
    row = page.locator(f"tr[data-code-id='{first.id}']")
    assert row.locator(".pill.bad").inner_text() == "voided" and admin in row.inner_text()

    page.goto(base + "/admin/codes?state=unused")
    arun(_redeem(database_url, customer_id, codes[1]))  # redeemed behind the page's back
    page.locator(f"tr[data-code-id='{second.id}'] button:has-text('Void')").click()
    error = page.locator(".flash-error")
    assert error.get_attribute("role") == "alert"
    assert f"already redeemed by {customer}" in error.inner_text()
    red, green, _ = rgb(page, ".flash-error")
    assert red > 2 * green
    no_sideways_scroll(page)
    arun(assert_ledger_ok(database_url))
