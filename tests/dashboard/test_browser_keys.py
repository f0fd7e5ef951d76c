"""The keys page in a real headless Chromium. Post/redirect/get: creating a key answers
303, the secret is shown once on the page the redirect leads to, and a reload neither shows
it again nor creates a second key. At desktop and phone widths: limits and models shown,
renaming, an expiry refused next to its field or saved, the expired badge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from minitoolai.accounts.store import list_keys, update_key
from minitoolai.db.engine import Database
from tests.dashboard.browser_checks import no_sideways_scroll, rgb
from tests.dashboard.conftest import arun, log_in_page, make_user


def test_reload_after_creating_a_key_leaves_one_key(live, new_page, database_url):
    base = live.url
    _, email = arun(make_user(database_url))
    page = new_page()
    log_in_page(page, base, email)
    page.goto(base + "/keys")
    posts = []
    page.on("response", lambda r: posts.append((r.url, r.status))
            if r.request.method == "POST" else None)
    page.fill("input[name=name]", "ci runner")
    page.click("button:has-text('Create key')")
    page.wait_for_selector("#secret")
    assert posts == [(base + "/keys", 303)]
    assert page.url == base + "/keys"
    secret = page.input_value("#secret")
    assert secret.startswith("mtai-")
    assert "Created ci runner." in page.inner_text(".flash")
    assert page.locator("table.keys-table tbody tr[data-key-id]").count() == 1
    api = requests.get(base + "/api/balance/", headers={"Authorization": f"Bearer {secret}"})
    assert api.status_code == 200

    page.reload()  # a GET: nothing is posted again, the secret is gone
    assert posts == [(base + "/keys", 303)]
    assert page.locator("#secret").count() == 0
    assert secret not in page.content()
    rows = page.locator("table.keys-table tbody tr[data-key-id]")
    assert rows.count() == 1 and "ci runner" in rows.inner_text()


WIDTHS = [(1366, 900), (390, 844)]


async def _expire(database_url: str, account_id: int) -> None:
    db = Database(database_url, pool_size=1)
    try:
        for key in await list_keys(db, account_id):
            await update_key(db, key.id, account_id,
                             expires_at=datetime.now(UTC) - timedelta(minutes=1))
    finally:
        await db.dispose()


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_limits_rename_expiry_and_the_expired_badge(live, new_page, database_url, width,
                                                    height):
    """A key made with a monthly limit and a model list shows them; the edit page renames
    it, refuses a past expiry next to the field (error styling, role=alert, the typed name
    kept), saves a future one (a confirmation); a key past its expiry shows a red badge."""
    base = live.url
    account_id, email = arun(make_user(database_url))
    page = new_page(width, height)
    log_in_page(page, base, email)
    page.goto(base + "/keys")
    page.fill("form.key-form input[name=name]", "nightly")
    page.fill("form.key-form input[name=month_limit]", "2.5")
    page.fill("form.key-form input[name=models]", "gpt-4o-mini")
    page.click("button:has-text('Create key')")
    page.wait_for_selector("#secret")
    flash = page.locator(".flash")
    assert flash.get_attribute("role") == "status" and "flash-error" not in (
        flash.get_attribute("class"))
    red, green, _ = rgb(page, ".flash")
    assert green > red  # a confirmation is green
    row = page.locator("table.keys-table tbody tr[data-key-id]")
    text = row.inner_text()
    assert "$2.50 a month" in text and "gpt-4o-mini" in text and "no expiry" in text
    assert row.locator('td[data-label="This month"]').is_visible()
    no_sideways_scroll(page)

    page.click("table.keys-table >> text=Edit")
    page.wait_for_url(base + "/keys/key_*")
    assert page.input_value("input[name=month_limit]") == "2.50"
    assert page.input_value("input[name=models]") == "gpt-4o-mini"
    page.fill("input[name=name]", "nightly builds")
    page.fill("input[name=expires]", "2001-01-01")
    page.click("button:has-text('Save')")
    error = page.locator("#err-expires")
    assert error.is_visible() and "has already passed" in error.inner_text()
    assert error.get_attribute("role") == "alert"
    assert page.get_attribute("input[name=expires]", "aria-invalid") == "true"
    red, green, _ = rgb(page, "#err-expires")
    assert red > 2 * green  # an error is red
    assert page.input_value("input[name=name]") == "nightly builds"
    no_sideways_scroll(page)

    page.fill("input[name=expires]", "2099-12-31")
    page.click("button:has-text('Save')")
    page.wait_for_url(base + "/keys")
    assert page.inner_text(".flash") == "Saved nightly builds."
    text = page.locator("table.keys-table tbody tr[data-key-id]").inner_text()
    assert "nightly builds" in text and "2099-12-31 00:00" in text
    assert page.locator("table.keys-table .pill.bad").count() == 0

    arun(_expire(database_url, account_id))
    page.reload()
    badge = page.locator("table.keys-table tr[data-key-id] .pill.bad", has_text="expired")
    assert badge.is_visible()
    red, green, _ = rgb(page, "table.keys-table .pill.bad")
    assert red > 2 * green
    no_sideways_scroll(page)
