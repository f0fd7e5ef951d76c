"""The playground in headless Chromium: an image job watched until its picture shows, speech
played in the page, a chat stopped mid-stream; each request's charge shown, as the ledger
has it; the tabs driven by keyboard alone. (A whole chat is in test_browser_customer.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from minitoolai.db.engine import Database
from minitoolai.db.tables import accounts, ledger_entries, usage
from minitoolai.money import format_usd
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


async def _charged(database_url: str, request_id: str) -> int:
    """What the ledger took for one request (its charge entry, positive)."""
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            amount = (await conn.execute(select(ledger_entries.c.amount).where(
                ledger_entries.c.request_id == request_id))).scalar_one()
    finally:
        await db.dispose()
    return -amount


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
    page.wait_for_selector("#image-cost:not([hidden])")
    assert page.inner_text("#image-cost") == f"Charged ${format_usd(IMAGE_PRICE)}."
    page.screenshot(path=str(tmp_path / "playground-image.png"), full_page=True)
    rows, balance = arun(_usage(database_url, account_id))
    assert [(r.model, r.images, r.cost, r.status) for r in rows] == \
        [("realvision", 1, IMAGE_PRICE, "ok")]
    assert arun(_charged(database_url, rows[0].request_id)) == IMAGE_PRICE
    assert balance == 1_000_000_000 - IMAGE_PRICE
    # a bad request shows the API's message, and costs nothing (the browser's own form
    # checks are switched off to let it through)
    page.eval_on_selector("#image-form", "form => { form.noValidate = true; }")
    page.fill("#image-width", "100")
    page.click("#image-send")
    page.wait_for_selector("#image-result.error-text")
    assert "width" in page.inner_text("#image-result")
    assert page.inner_text("#image-cost") == "Nothing was charged."
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
    page.wait_for_selector("#speech-cost:not([hidden])")
    assert page.inner_text("#speech-cost") == \
        f"Charged ${format_usd(rows[0].cost)} ({len(text)} characters)."
    assert arun(_charged(database_url, rows[0].request_id)) == rows[0].cost
    arun(assert_ledger_ok(database_url))


@pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_chat_cost_and_stop(live, new_page, database_url, width, height):
    account_id, email = arun(make_user(database_url, credit_nano=1_000_000_000))
    page = new_page(width, height)
    log_in_page(page, live.url, email)
    page.goto(live.url + "/playground")
    # the message box has a label a screen reader reads
    assert page.get_by_label("Your message").count() == 1
    page.select_option("#chat-model", "gpt-4o-mini")

    # a whole answer: its charge under it, as the ledger took it
    page.fill("#chat-input", "Hello")
    page.click("#chat-send")
    meta = page.locator(".msg.assistant .meta").first
    meta.wait_for()
    rows, _ = arun(_usage(database_url, account_id))
    assert len(rows) == 1 and rows[0].status == "ok"
    assert meta.inner_text().endswith(f"out tokens · charged ${format_usd(rows[0].cost)}")
    assert arun(_charged(database_url, rows[0].request_id)) == rows[0].cost

    # a long answer, stopped after its first words: the stream ends in the page at once,
    # the bubble says so, and then what the stopped request was charged
    page.fill("#chat-input", "Tell me everything [slow] [chunks:80]")
    page.click("#chat-send")
    stop = page.locator("#chat-stop")
    assert stop.is_visible() and page.is_disabled("#chat-send")
    stopped = page.locator(".msg.assistant").nth(1)
    page.wait_for_function(  # a function, not an expression: the CSP forbids eval
        "() => document.querySelectorAll('.msg.assistant')[1].textContent.length > 0")
    stop.click()
    page.wait_for_selector(".msg.assistant.stopped")
    assert page.inner_text("#chat-status") == "Stopped."
    assert stop.is_hidden() and page.is_enabled("#chat-send")
    shown = stopped.inner_text()
    assert shown.startswith("Alaska") and len(shown.split()) < 80
    page.wait_for_function("() => document.querySelector('.msg.stopped .meta').textContent"
                           ".indexOf('charged') > 0", timeout=30_000)
    rows, balance = arun(_usage(database_url, account_id))
    assert [r.status for r in rows] == ["ok", "cancelled"]
    note = stopped.locator(".meta").inner_text()
    assert note == f"Stopped · charged ${format_usd(rows[1].cost)}"
    assert arun(_charged(database_url, rows[1].request_id)) == rows[1].cost
    assert balance == 1_000_000_000 - rows[0].cost - rows[1].cost
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    arun(assert_ledger_ok(database_url))


def _selected(page) -> list[tuple[str, str, int, bool]]:
    """(tab, aria-selected, tabindex, its panel shown) for each playground tab."""
    return page.eval_on_selector_all("[role=tab][data-tab]", """tabs => tabs.map(t => [
        t.dataset.tab, t.getAttribute('aria-selected'), t.tabIndex,
        !document.getElementById(t.getAttribute('aria-controls')).hidden])""")


@pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_tabs_work_with_the_keyboard(live, new_page, database_url, width, height):
    _, email = arun(make_user(database_url))
    page = new_page(width, height)
    log_in_page(page, live.url, email)
    page.goto(live.url + "/playground")
    assert page.get_attribute("[role=tablist]", "aria-label") == "Playground"
    # Tab from the intro lands on the selected tab, the only tab in the Tab order
    page.focus("main > p.muted")
    page.evaluate("document.querySelector('main > p.muted').tabIndex = -1")
    page.focus("main > p.muted")
    page.keyboard.press("Tab")
    focused = "document.activeElement.dataset.tab || document.activeElement.id"
    assert page.evaluate(focused) == "chat"
    assert _selected(page) == [["chat", "true", 0, True], ["image", "false", -1, False],
                               ["speech", "false", -1, False]]
    page.keyboard.press("ArrowRight")
    assert page.evaluate(focused) == "image"
    assert _selected(page) == [["chat", "false", -1, False], ["image", "true", 0, True],
                               ["speech", "false", -1, False]]
    page.keyboard.press("End")
    assert page.evaluate(focused) == "speech" and _selected(page)[2][3]
    page.keyboard.press("ArrowRight")  # wraps round
    assert page.evaluate(focused) == "chat" and _selected(page)[0][3]
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(focused) == "speech"
    page.keyboard.press("Home")
    assert page.evaluate(focused) == "chat"
    # Tab leaves the tab list for the shown panel; Shift+Tab comes back to the selected tab
    page.keyboard.press("Tab")
    assert page.evaluate(focused) == "tab-chat"
    assert page.is_visible("#chat-input")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate(focused) == "chat"
