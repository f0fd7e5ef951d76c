"""Every page at desktop and phone widths in headless Chromium: it renders, nothing overflows
sideways on a phone, and screenshots are kept (under the test's tmp_path) for a look."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert

from minitoolai.clock import utcnow
from minitoolai.dashboard.codes import create_codes
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from minitoolai.ledger.credits import add_credit
from tests.dashboard.conftest import arun, log_in_page, make_user

CUSTOMER_PAGES = ["/", "/keys", "/usage", "/credits", "/playground", "/docs", "/account"]
ADMIN_PAGES = ["/admin", "/admin/accounts", "/admin/codes", "/admin/catalog"]


async def _seed(database_url: str) -> str:
    """An admin with credit, codes, and two weeks of usage rows over three models (the read
    side only: these rows are for the table and chart, the ledger is not involved)."""
    admin_id, email = await make_user(database_url, admin=True)
    db = Database(database_url, pool_size=1)
    try:
        await add_credit(db, admin_id, 12_345_000_000, note="seed")
        await create_codes(db, 10_000_000_000, 3, batch="launch")
        now = utcnow()
        rows = []
        for day in range(14):
            for n, model in enumerate(("gpt-4o-mini", "gpt-4.1", "realvision")):
                if (day + n) % 3 == 0:
                    continue
                rows.append({
                    "request_id": f"seed-{day}-{n}", "account_id": admin_id, "key_id": None,
                    "created_at": now - timedelta(days=day, minutes=n),
                    "endpoint": "/api/texttoimage" if n == 2 else "/api/chat-completions",
                    "model": model, "prompt_tokens": 0 if n == 2 else 1200 + day * 10,
                    "completion_tokens": 0 if n == 2 else 300, "images": 1 if n == 2 else 0,
                    "cost": (1_500_000 if n == 2 else (2 + day) * 100_000 * (n + 1)),
                    "status": "error" if day == 3 and n == 1 else "ok", "latency_ms": 800 + n})
        async with db.write() as conn:
            await conn.execute(insert(usage), rows)
    finally:
        await db.dispose()
    return email


@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)], ids=["desktop", "phone"])
def test_every_page_fits(live, new_page, database_url, tmp_path, width, height):
    email = arun(_seed(database_url))
    page = new_page(width, height)
    page.goto(live.url + "/")
    page.screenshot(path=str(tmp_path / "landing.png"), full_page=True)
    page.goto(live.url + "/login")
    page.screenshot(path=str(tmp_path / "login.png"))
    log_in_page(page, live.url, email)
    admin_id = page.evaluate("1")  # any page will do; the account page is reached by link
    for path in CUSTOMER_PAGES + ADMIN_PAGES + ["__account__"]:
        if path == "__account__":
            page.goto(live.url + "/admin/accounts")
            page.click(f"table.data >> text={email}")
            page.wait_for_url(live.url + "/admin/accounts/*")
        else:
            response = page.goto(live.url + path)
            assert response.status == 200, path
        name = (path.strip("/").replace("/", "-") or "overview") + ".png"
        page.screenshot(path=str(tmp_path / name), full_page=width > 600)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} overflows sideways by {overflow}px at {width}px"
    assert admin_id == 1
