"""Account self-service in a real headless Chromium, at a desktop's and a phone's width:
change the password (a second browser is logged out, the old password fails, the new one
works), log out everywhere, the password reset by email end to end (a real SMTP server on
loopback), inline field errors styled as errors and confirmations as confirmations, the
HTML page of an unknown address, and nothing wider than the phone's screen."""

from __future__ import annotations

import re

import pytest

from tests.dashboard.conftest import PASSWORD, arun, make_user
from tests.dashboard.mailbox import expire_resets, live_mail, mailbox, reset_link  # noqa: F401

NEW_PASSWORD = "a brand new passphrase"
WIDTHS = pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)],
                                 ids=["desktop", "phone"])


def _fits(page, what: str) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{what} overflows sideways by {overflow}px"


def _style(page, selector: str, prop: str) -> str:
    return page.eval_on_selector(selector, f"e => getComputedStyle(e).{prop}")


def _hue(page, selector: str, prop: str) -> str:
    """"red", "green" or "other": what a person sees of a computed colour, whatever the
    palette's exact shades."""
    red, green, blue = (int(n) for n in re.findall(r"\d+", _style(page, selector, prop))[:3])
    if red > 100 and red > 2 * green and red > 2 * blue:
        return "red"
    if green > red and green > blue:
        return "green"
    return "other"


def _log_in(page, base: str, email: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Log in')")


def _assert_field_error(page, field: str, words: str) -> None:
    """The error is under the field, announced, in the error colours, and the field is
    marked invalid and described by it."""
    error = page.locator(f"#field-{field}-error")
    assert words in error.inner_text()
    assert error.get_attribute("role") == "alert"
    assert error.is_visible()
    field_box = page.locator(f"#field-{field}").bounding_box()
    error_box = error.bounding_box()
    assert error_box["y"] >= field_box["y"] + field_box["height"] - 1  # right under it
    assert page.get_attribute(f"#field-{field}", "aria-invalid") == "true"
    assert page.get_attribute(f"#field-{field}", "aria-describedby") == f"field-{field}-error"
    assert _hue(page, f"#field-{field}-error", "color") == "red"
    assert _hue(page, f"#field-{field}", "borderTopColor") == "red"


@WIDTHS
def test_change_password_and_log_out_everywhere(live, new_page, database_url, tmp_path,
                                                width, height):
    base = live.url
    _, email = arun(make_user(database_url))
    page, other = new_page(width, height), new_page(width, height)
    for browser_page in (page, other):
        _log_in(browser_page, base, email, PASSWORD)
        browser_page.wait_for_url(base + "/")

    page.click("nav >> text=Account")
    page.wait_for_url(base + "/account")
    assert "logged in on 2 browsers" in page.inner_text("#session-count")
    _fits(page, "/account")

    # a wrong current password: an error beside that field, nothing changed
    page.fill("#field-current", "not my password")
    page.fill("#field-password", NEW_PASSWORD)
    page.fill("#field-password2", NEW_PASSWORD)
    page.click("button:has-text('Change password')")
    _assert_field_error(page, "current", "not your current password")
    page.screenshot(path=str(tmp_path / "account-error.png"), full_page=True)
    _fits(page, "/account with an error")

    page.fill("#field-current", PASSWORD)
    page.fill("#field-password", NEW_PASSWORD)
    page.fill("#field-password2", NEW_PASSWORD)
    page.click("button:has-text('Change password')")
    page.wait_for_url(base + "/account")
    notice = page.locator(".flash")
    assert "Your password is changed" in notice.inner_text()
    assert notice.get_attribute("role") == "status"  # a confirmation, not an alert
    assert _hue(page, ".flash", "color") == "green"
    assert page.locator(".field-error").count() == 0
    assert "logged in on 1 browser," in page.inner_text("#session-count")

    # the other browser was logged out; the old password fails there, the new one works
    other.goto(base + "/keys")
    assert other.url.startswith(base + "/login")
    _log_in(other, base, email, PASSWORD)
    _assert_field_error(other, "password", "Wrong email or password.")
    _fits(other, "/login with an error")
    _log_in(other, base, email, NEW_PASSWORD)
    other.wait_for_url(base + "/")

    # log out everywhere (the confirm dialog is accepted): both browsers are out
    page.click("button:has-text('Log out everywhere')")
    page.wait_for_url(base + "/login")
    assert "logged out everywhere" in page.inner_text(".flash")
    other.goto(base + "/usage")
    assert other.url.startswith(base + "/login")
    page.goto(base + "/account")
    assert page.url.startswith(base + "/login")


@WIDTHS
def test_reset_by_email(live_mail, mailbox, new_page, database_url, tmp_path,  # noqa: F811
                        width, height):
    base = live_mail.url
    _, email = arun(make_user(database_url))
    page = new_page(width, height)
    page.goto(base + "/login")
    page.click("text=Forgot your password?")
    page.wait_for_url(base + "/forgot")
    page.fill("input[name=email]", email)
    page.click("button:has-text('Send the link')")
    assert "If an account uses that address" in page.inner_text("#reset-sent")
    _fits(page, "/forgot")

    _, message = mailbox.next()
    assert message["Subject"] == "Reset your MiniToolAI password"
    link = reset_link(message)
    page.goto(link)
    assert email in page.inner_text("main")
    page.fill("#field-password", NEW_PASSWORD)
    page.fill("#field-password2", NEW_PASSWORD + " but different")
    page.click("button:has-text('Set the new password')")
    _assert_field_error(page, "password2", "The two passwords differ.")
    _fits(page, "the reset page with an error")
    page.fill("#field-password", NEW_PASSWORD)
    page.fill("#field-password2", NEW_PASSWORD)
    page.click("button:has-text('Set the new password')")
    page.wait_for_url(base + "/login")
    assert "Your password is changed" in page.inner_text(".flash")
    _log_in(page, base, email, NEW_PASSWORD)
    page.wait_for_url(base + "/")

    # the link works once
    page.goto(link)
    assert "does not work any more" in page.inner_text("h1")
    assert _hue(page, "#reset-invalid", "color") == "red"  # .error-text
    page.screenshot(path=str(tmp_path / "reset-used.png"))
    _fits(page, "a used reset link")

    # and not after its time
    page.goto(base + "/forgot")
    page.fill("input[name=email]", email)
    page.click("button:has-text('Send the link')")
    _, message = mailbox.next()
    late = reset_link(message)
    arun(expire_resets(database_url))
    page.goto(late)
    assert "does not work any more" in page.inner_text("h1")


@WIDTHS
def test_error_pages_and_inline_errors(live, new_page, database_url, tmp_path, width, height):
    base = live.url
    _, email = arun(make_user(database_url))
    page = new_page(width, height)

    # an unknown address: an HTML page with the way back, not JSON
    response = page.goto(base + "/no/such/page")
    assert response.status == 404
    assert page.inner_text("h1") == "Page not found"
    assert page.locator("#request-id").inner_text() == response.headers["x-request-id"]
    assert page.locator("a:has-text('Back to the overview')").is_visible()
    page.screenshot(path=str(tmp_path / "not-found.png"))
    _fits(page, "the 404 page")

    # sign-up: the error beside the field it is about
    page.goto(base + "/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Sign up')")
    _assert_field_error(page, "email", "already exists")
    _fits(page, "/signup with an error")

    # a bad card amount: the overview again, the error under the amount
    _log_in(page, base, email, PASSWORD)
    page.wait_for_url(base + "/")
    page.fill("#field-amount", "lots")
    page.click("button:has-text('Pay')")
    _assert_field_error(page, "amount", "Not an amount")
    assert page.input_value("#field-amount") == "lots"
    assert page.locator("#balance").is_visible()
    page.screenshot(path=str(tmp_path / "amount-error.png"), full_page=True)
    _fits(page, "the overview with an amount error")
