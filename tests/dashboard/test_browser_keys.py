"""Post/redirect/get on the keys page in a real headless Chromium: creating a key answers
303, the secret is shown once on the page the redirect leads to, and a reload neither shows
it again nor creates a second key."""

from __future__ import annotations

import requests

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
