"""The playground's image and speech tabs in headless Chromium: an image job watched until
its picture shows, speech played in the page; both charged to the playground key. (The chat
tab is in test_browser_customer.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, usage
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import arun, log_in_page, make_user

IMAGE_PRICE = 1_500_000  # the seed's $0.0015


async def _usage(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            rows = (await conn.execute(select(usage).where(usage.c.account_id == account_id)
                                       .order_by(usage.c.id))).all()
            balance = (await conn.execute(select(accounts.c.balance).where(
                accounts.c.id == account_id))).scalar_one()
    finally:
        await db.dispose()
    return rows, balance


def test_image_job_shows_its_picture(live, new_page, database_url, tmp_path):
    account_id, email = arun(make_user(database_url, credit_nano=1_000_000_000))
    page = new_page()
    log_in_page(page, live.url, email)
    page.goto(live.url + "/playground")
    page.click("[data-tab=image]")
    page.select_option("#image-model", "realvision")
    page.fill("#image-prompt", "a lighthouse at dusk")
    page.click("#image-send")
    image = page.locator("#image-result img")
    image.wait_for()
    page.wait_for_function(
        "document.querySelector('#image-result img').naturalWidth > 0")
    assert image.evaluate("img => img.naturalWidth") == 512
    page.screenshot(path=str(tmp_path / "playground-image.png"), full_page=True)
    rows, balance = arun(_usage(database_url, account_id))
    assert [(r.model, r.images, r.cost, r.status) for r in rows] == \
        [("realvision", 1, IMAGE_PRICE, "ok")]
    assert balance == 1_000_000_000 - IMAGE_PRICE
    # a bad request shows the API's message, and costs nothing (the browser's own form
    # checks are switched off to let it through)
    page.eval_on_selector("#image-form", "form => { form.noValidate = true; }")
    page.fill("#image-width", "100")
    page.click("#image-send")
    page.wait_for_selector("#image-result.error-text")
    assert "width" in page.inner_text("#image-result")
    assert arun(_usage(database_url, account_id))[1] == balance
    arun(assert_ledger_ok(database_url))


def test_speech_plays_in_the_page(live, new_page, database_url):
    account_id, email = arun(make_user(database_url, credit_nano=1_000_000_000))
    page = new_page()
    log_in_page(page, live.url, email)
    page.goto(live.url + "/playground")
    page.click("[data-tab=speech]")
    if page.locator("#speech-form").count() == 0:
        pytest.skip("no speech model is available here: " + page.inner_text("#tab-speech"))
    page.select_option("#speech-model", "espeak-ng")
    text = "Hello from the playground."
    page.fill("#speech-input", text)
    with page.expect_response(lambda r: r.url.endswith("/playground/speech")) as answer:
        page.click("#speech-send")
    assert answer.value.status == 200
    assert answer.value.headers["content-type"].startswith("audio/")
    page.wait_for_selector("#speech-audio:not([hidden])")
    assert page.eval_on_selector("#speech-audio", "a => a.src").startswith("blob:")
    page.wait_for_function("document.querySelector('#speech-audio').duration > 0.3")
    rows, balance = arun(_usage(database_url, account_id))
    assert [(r.model, r.characters, r.status) for r in rows] == [("espeak-ng", len(text), "ok")]
    assert balance == 1_000_000_000 - rows[0].cost and rows[0].cost == len(text) * 1000
    arun(assert_ledger_ok(database_url))
