"""The usage page's filters, paging and CSV export over plain HTTP, on usage rows written
straight into the table (the read side only)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from sqlalchemy import insert

from minitoolai.app import create_app
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from tests.dashboard.conftest import login, make_user
from tests.servers import ThreadedServer


async def _seed(database_url: str, account_id: int) -> None:
    """25 rows: 3 days (Nov 1, 2, 3) x models, costs 1..25 nanodollars in id order."""
    rows = []
    for i in range(25):
        day = 1 + i // 9
        rows.append({"request_id": f"r{i:02d}", "account_id": account_id, "key_id": None,
                     "created_at": datetime(2026, 11, day, 12, i, tzinfo=UTC),
                     "endpoint": "/api/chat-completions",
                     "model": "gpt-4o" if i % 2 else "gpt-4.1", "prompt_tokens": i,
                     "completion_tokens": 1, "cost": i + 1, "status": "ok",
                     "estimated": i == 24})
    db = Database(database_url, pool_size=1)
    try:
        async with db.write() as conn:
            await conn.execute(insert(usage), rows)
    finally:
        await db.dispose()


def _request_ids(html: str) -> list[int]:
    # each row shows its prompt tokens as "<i> / 1"
    return [int(n) for n in re.findall(r'data-label="Tokens" class="num">(\d+) / 1<', html)]


async def test_filters_paging_and_csv(dash_settings, database_url):
    account_id, email = await make_user(database_url)
    await _seed(database_url, account_id)
    with ThreadedServer(create_app(dash_settings(dashboard={"usage_page_size": 10}))) as live:
        http = login(live.url, email)
        first = http.get(live.url + "/usage").text
        assert _request_ids(first) == list(range(24, 14, -1))  # newest first, 10 a page
        # each row shows its request id (the x-request-id a customer quotes)
        assert all(f'class="muted rid"' in first and f">r{i:02d}</small>" in first
                   for i in range(24, 14, -1))
        # shown by the display rule, exact on hover
        assert ('25 requests, <span class="money" title="$0.000000325">&lt;$0.0001</span>'
                ' in total, 325 tokens (in + out).') in first
        older = re.search(r'href="(\?before=\d+)"', first).group(1)
        second = http.get(live.url + "/usage" + older).text
        assert _request_ids(second) == list(range(14, 4, -1))

        day2 = http.get(live.url + "/usage?start=2026-11-02&end=2026-11-02").text
        assert _request_ids(day2) == list(range(17, 8, -1))
        assert "9 requests" in day2
        both = http.get(live.url + "/usage?start=2026-11-02&end=2026-11-03&model=gpt-4o").text
        assert _request_ids(both) == [23, 21, 19, 17, 15, 13, 11, 9]
        # the chart covers the filter's days: it sums to exactly what the table counts,
        # whichever metric it draws (issue 17)
        query = "/usage?start=2026-11-02&end=2026-11-03&model=gpt-4o"
        expected = {"cost": sum(i + 1 for i in range(9, 25, 2)), "requests": 8,
                    "tokens": sum(i + 1 for i in range(9, 25, 2))}
        for metric, total in expected.items():
            text = http.get(live.url + query + "&metric=" + metric).text
            assert f'data-metric="{metric}" data-total="{total}"' in text
            days = re.findall(r'<td data-label="Day">([\d-]+)</td>', text)
            assert days == ["2026-11-03", "2026-11-02"]
        assert "8 requests" in both and f"{expected['tokens']} tokens" in both
        # the range and metric are checked as strictly as the dates
        for bad, param in (("metric=money", "metric must be one of cost, requests, tokens"),
                           ("start=2026-11-03&end=2026-11-02", "start must not be after end"),
                           ("start=2025-01-01&end=2026-11-02", "at most 366 days")):
            refused = http.get(live.url + "/usage?" + bad)
            assert refused.status_code == 400 and param in refused.text, bad
        # a malformed date is a clear 400 naming the field (issue 15)
        refused = http.get(live.url + "/usage?start=yesterday")
        assert refused.status_code == 400 and "start must be a date" in refused.text

        exported = http.get(live.url + "/usage.csv?start=2026-11-02&model=gpt-4o")
        assert exported.headers["content-type"].startswith("text/csv")
        assert "attachment" in exported.headers["content-disposition"]
        table = list(csv.DictReader(io.StringIO(exported.text)))
        assert [r["request_id"] for r in table] == [f"r{i:02d}" for i in range(9, 25, 2)]
        assert table[0]["time_utc"] == "2026-11-02T12:09:00Z"
        assert table[0]["cost_usd"] == "0.00000001" and table[-1]["estimated"] == "no"
        everything = list(csv.DictReader(io.StringIO(http.get(live.url + "/usage.csv").text)))
        assert len(everything) == 25 and everything[-1]["estimated"] == "yes"
