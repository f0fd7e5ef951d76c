"""The usage charts as a person sees them in headless Chromium, on a desktop and a phone:
the y-axis, today's date label and the legend inside the screen, nothing scrolling sideways;
the range buttons and the metric switch change what is drawn, and what is drawn sums to
exactly what the usage table counts for the same days."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from minitoolai.clock import utcnow
from minitoolai.dashboard.charts import day_label
from minitoolai.dashboard.usage_query import _midnight
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from tests.dashboard.conftest import arun, log_in_page, login
from tests.dashboard.test_browser_layout import _seed


async def _sums(database_url: str, days: int) -> tuple[int, int, int]:
    """(requests, spend, tokens) of the last `days` UTC days, straight from the table."""
    first = utcnow().date() - timedelta(days=days - 1)
    db = Database(database_url, pool_size=1)
    try:
        async with db.read() as conn:
            row = (await conn.execute(select(
                func.count(), func.sum(usage.c.cost),
                func.sum(usage.c.prompt_tokens + usage.c.completion_tokens))
                .where(usage.c.created_at >= _midnight(first)))).one()
    finally:
        await db.dispose()
    return int(row[0]), int(row[1] or 0), int(row[2] or 0)


def _inside(box: dict, width: int) -> bool:
    return box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5


def _shown_chart(page):
    """The drawing the CSS shows at this width (the other is display: none)."""
    shown = [svg for svg in page.locator("svg.chart").all() if svg.is_visible()]
    assert len(shown) == 1
    return shown[0]


@pytest.mark.parametrize("width,height", [(1366, 900), (390, 844)], ids=["desktop", "phone"])
def test_chart_is_readable_and_exact(live, new_page, database_url, tmp_path, width, height):
    email = arun(_seed(database_url))
    page = new_page(width, height)
    log_in_page(page, live.url, email)
    page.goto(live.url + "/usage")
    chart = _shown_chart(page)
    assert "chart-narrow" in chart.get_attribute("class") if width < 720 else \
        "chart-wide" in chart.get_attribute("class")
    # the y-axis labels, every date label and the legend are inside the screen, and readable
    y_labels = chart.locator("text.y-label").all()
    assert [t.text_content() for t in y_labels][0] == "$0.00"
    for text in y_labels + chart.locator("text.x-label").all():
        box = text.bounding_box()
        assert _inside(box, width), (text.text_content(), box)
        assert box["height"] >= 9, f"{text.text_content()!r} is {box['height']}px high"
    # today's bar has its date under it
    today = utcnow().date()
    last = chart.locator("text.x-label").first
    assert last.get_attribute("data-day") == today.isoformat()
    assert last.text_content() == day_label(today)
    for item in page.locator(".legend-item").all():
        assert item.is_visible() and _inside(item.bounding_box(), width), item.inner_text()
    assert "gpt-4.1" in page.inner_text(".legend")
    page.screenshot(path=str(tmp_path / "usage-30.png"), full_page=True)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"

    # 7 days: the chart, the totals and the table all cover the same week
    page.click("[data-range-link]:has-text('7 days')")
    assert page.get_attribute("[data-range-link][aria-current]", "href").count("start=") == 1
    requests_7, spend_7, tokens_7 = arun(_sums(database_url, 7))
    box = page.locator(".chart-box")
    assert box.get_attribute("data-total") == str(spend_7)
    assert page.locator("table.chart-table tbody tr").count() == 7
    chart = _shown_chart(page)
    assert chart.locator("text.x-label").first.text_content() == day_label(today)
    bar_days = {rect.get_attribute("data-day") for rect in chart.locator("rect").all()}
    assert min(bar_days) >= (today - timedelta(days=6)).isoformat()
    assert page.inner_text("#usage-summary").startswith(f"{requests_7} requests,")

    # requests, then tokens: the same days, counted another way
    page.click("[data-metric-link]:has-text('Requests')")
    assert page.locator(".chart-box").get_attribute("data-total") == str(requests_7)
    assert page.locator("[data-range-link][aria-current]").inner_text() == "7 days"
    assert _shown_chart(page).locator("text.y-label").first.text_content() == "0"
    page.click("[data-metric-link]:has-text('Tokens')")
    assert page.locator(".chart-box").get_attribute("data-total") == str(tokens_7)
    assert f"{tokens_7:,} tokens" in page.inner_text("#usage-summary")
    # 90 days: every seeded row (two weeks of them)
    page.click("[data-range-link]:has-text('90 days')")
    requests_90, _, tokens_90 = arun(_sums(database_url, 90))
    assert page.locator(".chart-box").get_attribute("data-total") == str(tokens_90)
    assert requests_90 > requests_7
    assert page.locator("table.chart-table tbody tr").count() == 90
    chart = _shown_chart(page)
    assert chart.locator("text.x-label").first.text_content() == day_label(today)
    for text in chart.locator("text.y-label").all():
        assert _inside(text.bounding_box(), width)
    page.screenshot(path=str(tmp_path / "usage-90-tokens.png"), full_page=True)
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px"


def test_operator_charts_take_a_range_and_metric(live, database_url):
    """The platform page: the same range buttons and metrics over every account's usage."""
    email = arun(_seed(database_url))
    http = login(live.url, email)
    requests_7, spend_7, tokens_7 = arun(_sums(database_url, 7))
    for query, total in (("", None), ("?days=7", spend_7), ("?days=7&metric=requests",
                                                            requests_7),
                         ("?days=7&metric=tokens", tokens_7)):
        page = http.get(live.url + "/admin" + query)
        assert page.status_code == 200
        totals = re.findall(r'data-metric="(\w+)" data-total="(\d+)"', page.text)
        assert len(totals) == 2  # credit added, then usage
        if total is not None:
            assert int(totals[1][1]) == total
    assert 'aria-current="true" data-range-link>7 days<' in page.text
    for bad in ("days=8", "days=x", "metric=euros"):
        refused = http.get(live.url + "/admin?" + bad)
        assert refused.status_code == 400, bad
