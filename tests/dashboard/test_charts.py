"""The server-drawn charts (dashboard/charts.py): round axes with exact middle labels, today's
bar always labelled, the legend and the table summing to the series, both drawings."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from minitoolai.dashboard.charts import axis_label, nice_ceiling, stacked_bars


@pytest.mark.parametrize("value,top", [(0, 2), (1, 2), (2, 2), (3, 4), (9, 10), (10, 20),
                                       (11, 20), (150, 200), (350, 400), (999, 1000),
                                       (1_500_000, 2_000_000)])
def test_axis_tops_are_round_with_a_whole_middle(value, top):
    assert nice_ceiling(value) == top
    assert top % 2 == 0 and top >= value


def test_axis_labels():
    assert axis_label(5_000_000, "cost") == "$0.005"
    assert axis_label(0, "requests") == "0"
    assert axis_label(1_500, "tokens") == "1.5k"
    assert axis_label(2_000_000, "tokens") == "2M"


@pytest.mark.parametrize("days", [1, 7, 30, 31, 90, 366])
def test_today_always_has_its_date_label(days):
    today = date(2026, 12, 2)
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    series = {"a": [i % 3 for i in range(days)], "b": [1] * days}
    chart = stacked_bars(dates, series, title="Requests", metric="requests")
    for svg, most in ((chart.wide, 8), (chart.narrow, 4)):
        labelled = re.findall(r'class="x-label"[^>]*data-day="([\d-]+)"', svg)
        assert labelled[0] == today.isoformat()
        assert 1 <= len(labelled) <= most
        # every bar stays inside the picture
        width = float(re.search(r'viewBox="0 0 (\d+)', svg).group(1))
        for x, w in re.findall(r'<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg):
            assert float(x) + float(w) <= width
    assert chart.total == sum(series["a"]) + days
    assert sum(value for _, value in chart.rows) == chart.total
    assert chart.rows[0][0] == today  # the table: newest first
    expected = [("a", sum(series["a"])), ("b", days)]
    assert [(item.label, item.total) for item in chart.legend] == \
        [(label, total) for label, total in expected if total]  # all-zero series left out


def test_series_beyond_the_limit_become_other_and_empty_ones_go():
    dates = [date(2026, 12, 1), date(2026, 12, 2)]
    series = {f"m{n}": [n, 1] for n in range(1, 11)} | {"idle": [0, 0]}
    chart = stacked_bars(dates, series, title="Spend", max_series=4)
    assert [item.label for item in chart.legend] == ["m1", "m2", "m3", "other"]
    assert chart.legend[-1].total == sum(n + 1 for n in range(4, 11))
    assert chart.total == sum(n + 1 for n in range(1, 11))
    assert "idle" not in chart.wide


def test_an_empty_period_says_so():
    chart = stacked_bars([date(2026, 12, 2)], {}, title="Spend")
    assert "Nothing in this period" in chart.wide and "Nothing in this period" in chart.narrow
    assert chart.total == 0 and 'aria-label="Spend, Dec 2 to Dec 2: $0.00 in total"' in chart.wide
