"""An automated accessibility check: axe-core (from the npm registry, tests/dashboard/node)
run in the real headless Chromium on every dashboard page, logged out, as a customer and as
an operator, at desktop and phone widths. No serious or critical violation may remain.

axe is put into the page through the driver (Playwright's evaluate, which the page's CSP
does not govern), not by a script tag: the production CSP stays as strict as it is, and the
check sees the pages exactly as a person gets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dashboard.conftest import arun, log_in_page, make_user
from tests.dashboard.test_browser_layout import ADMIN_PAGES, CUSTOMER_PAGES, _seed

AXE = Path(__file__).parent / "node" / "node_modules" / "axe-core" / "axe.min.js"
PUBLIC_PAGES = ["/", "/login", "/signup", "/docs", "/forgot"]
# WCAG 2.0/2.1 A and AA, and axe's best practices that are about structure (regions, headings)
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.skip("axe-core is not installed: run `npm ci` in tests/dashboard/node")
    return AXE.read_text()


def serious_violations(page, axe_source: str) -> list[str]:
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(axe_source)
    result = page.evaluate("tags => axe.run(document, {runOnly: {type: 'tag', values: tags}})",
                           TAGS)
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + "; ".join(" ".join(n["target"]) for n in v["nodes"][:4])
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_no_serious_violation_on_any_page(live, new_page, database_url, axe_source,
                                          width, height):
    admin_email = arun(_seed(database_url))
    _, customer_email = arun(make_user(database_url, credit_nano=2_000_000_000))
    found: dict[str, list[str]] = {}
    blocked: list[str] = []  # what the CSP refused, on any page: nothing may be

    def watch(page):
        page.on("console", lambda message: blocked.append(message.text)
                if "Content Security Policy" in message.text else None)
        return page

    def check(page, label: str) -> None:
        problems = serious_violations(page, axe_source)
        if problems:
            found[label] = problems

    page = watch(new_page(width, height))
    for path in PUBLIC_PAGES:
        assert page.goto(live.url + path).status == 200, path
        check(page, "logged out " + path)
    missing = page.goto(live.url + "/no-such-page")
    assert missing.status == 404
    if missing.headers["content-type"].startswith("text/html"):  # an HTML error page
        check(page, "logged out 404")
    page.goto(live.url + "/login")  # a field's own error (aria-invalid, aria-describedby)
    page.fill("input[name=email]", customer_email)
    page.fill("input[name=password]", "not the password")
    page.click("button:has-text('Log in')")
    page.locator("#field-password-error").wait_for()
    check(page, "logged out /login with an error")

    page = watch(new_page(width, height))
    log_in_page(page, live.url, customer_email)
    for path in CUSTOMER_PAGES:
        assert page.goto(live.url + path).status == 200, path
        check(page, "customer " + path)
        if path == "/playground":  # each tab's panel, shown
            for tab in ("image", "speech"):
                page.click(f"[data-tab={tab}]")
                check(page, f"customer /playground {tab} tab")
        if path == "/usage":  # the chart's numbers, opened
            page.click(".chart-data summary")
            check(page, "customer /usage numbers")
    # a key's edit page, then with a field refused (its error next to it)
    page.goto(live.url + "/keys")
    page.fill("form.key-form input[name=name]", "a11y")
    page.click("button:has-text('Create key')")
    check(page, "customer /keys with a new key")
    page.click("table.keys-table >> text=Edit")
    page.wait_for_url(live.url + "/keys/key_*")
    check(page, "customer /keys/<id>")
    page.fill("input[name=expires]", "2001-01-01")
    page.click("button:has-text('Save')")
    assert page.locator("#err-expires").is_visible()
    check(page, "customer /keys/<id> refused")

    page = watch(new_page(width, height))
    log_in_page(page, live.url, admin_email)
    for path in ["/", "/usage"] + ADMIN_PAGES:
        assert page.goto(live.url + path).status == 200, path
        check(page, "operator " + path)
    page.goto(live.url + "/admin/accounts")
    page.click(f"table.data >> text={admin_email}")
    page.wait_for_url(live.url + "/admin/accounts/*")
    check(page, "operator account page")
    assert not blocked, blocked
    assert not found, "\n".join(f"{where}: {p}" for where, ps in found.items() for p in ps)
