"""Reading the usage table for the dashboard: filtered pages, CSV rows, daily spend per model.

Every query takes the account id from the caller's session (or None for the operator's
all-accounts views): a customer's filters can narrow their own rows, never widen them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import case, func, select

from minitoolai.clock import utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries, usage
from minitoolai.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class UsageFilter:
    start: date | None = None  # inclusive, UTC days
    end: date | None = None  # inclusive
    model: str | None = None
    key_id: str | None = None  # one API key's requests (always within the account's)

    @classmethod
    def parse(cls, start: str | None, end: str | None, model: str | None,
              key_id: str | None = None) -> UsageFilter:
        """From query parameters; a malformed or out-of-range date is a 400 naming it."""
        return cls(_date(start, "start"), _date(end, "end"), (model or "").strip() or None,
                   (key_id or "").strip()[:32] or None)

    def apply(self, query, account_id: int | None):
        if account_id is not None:
            query = query.where(usage.c.account_id == account_id)
        if self.start:
            query = query.where(usage.c.created_at >= _midnight(self.start))
        if self.end:
            query = query.where(usage.c.created_at < _midnight(self.end + timedelta(days=1)))
        if self.model:
            query = query.where(usage.c.model == self.model)
        if self.key_id:
            query = query.where(usage.c.key_id == self.key_id)
        return query

    def as_params(self) -> dict[str, str]:
        out = {}
        if self.start:
            out["start"] = self.start.isoformat()
        if self.end:
            out["end"] = self.end.isoformat()
        if self.model:
            out["model"] = self.model
        if self.key_id:
            out["key"] = self.key_id
        return out


_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
FIRST_DAY, LAST_DAY = date(1970, 1, 1), date(9998, 12, 31)  # the day after must exist too


def _date(text: str | None, param: str) -> date | None:
    """YYYY-MM-DD, strictly (no week dates, no compact forms), within FIRST_DAY..LAST_DAY."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text) if _ISO_DAY.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None or not FIRST_DAY <= day <= LAST_DAY:
        raise InvalidRequest(f"{param} must be a date YYYY-MM-DD between {FIRST_DAY} and"
                             f" {LAST_DAY}", param=param)
    return day


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time(), tzinfo=UTC)


async def usage_page(db: Database, account_id: int | None, flt: UsageFilter, *,
                     limit: int, before_id: int | None = None) -> list:
    """Newest first, `limit` rows, older than `before_id` when paging."""
    query = flt.apply(select(usage), account_id).order_by(usage.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(usage.c.id < before_id)
    async with db.read() as conn:
        return (await conn.execute(query)).all()


async def usage_totals(db: Database, account_id: int | None,
                       flt: UsageFilter) -> tuple[int, int, int]:
    """(requests, cost in nanodollars, tokens in + out) matching the filter."""
    query = flt.apply(select(func.count(), func.coalesce(func.sum(usage.c.cost), 0),
                             func.coalesce(func.sum(usage.c.prompt_tokens
                                                    + usage.c.completion_tokens), 0))
                      .select_from(usage), account_id)
    async with db.read() as conn:
        row = (await conn.execute(query)).one()
    return int(row[0]), int(row[1]), int(row[2])


async def usage_rows_for_csv(db: Database, account_id: int | None, flt: UsageFilter,
                             batch: int = 5000) -> AsyncIterator[list]:
    """Every matching row, oldest first, a batch at a time (no transaction held between
    batches, no export held in memory)."""
    after = 0
    while True:
        query = (flt.apply(select(usage), account_id).where(usage.c.id > after)
                 .order_by(usage.c.id).limit(batch))
        async with db.read() as conn:
            rows = (await conn.execute(query)).all()
        if not rows:
            return
        yield rows
        after = rows[-1].id


def _day_column(db: Database, column):
    # SQLite stores UTC datetimes as text; PostgreSQL's timestamptz needs its UTC day
    if db.is_sqlite:
        return func.date(column)
    return func.date(func.timezone("UTC", column))


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


CHART_METRICS = ("cost", "requests", "tokens")
MAX_CHART_DAYS = 366
CHART_RANGES = (7, 30, 90)  # the range buttons above the charts, in days up to today


@dataclass(frozen=True, slots=True)
class ChartRange:
    """The days a chart covers (UTC, inclusive) and what it counts."""
    first: date
    last: date
    metric: str = "cost"

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    @classmethod
    def of(cls, flt: UsageFilter, metric: str | None, default_days: int,
           today: date | None = None) -> ChartRange:
        """The chart of a usage filter: its own dates where it has them (so the chart sums
        to the table's total), else the last `default_days` days up to its end or today.
        Strict: an unknown metric, a start after the end, or more than MAX_CHART_DAYS days
        is a 400 naming the parameter."""
        metric = (metric or "").strip() or "cost"
        if metric not in CHART_METRICS:
            raise InvalidRequest(f"metric must be one of {', '.join(CHART_METRICS)}",
                                 param="metric")
        last = flt.end or max(today or utcnow().date(), flt.start or FIRST_DAY)
        first = flt.start or max(last - timedelta(days=default_days - 1), FIRST_DAY)
        if first > last:
            raise InvalidRequest("start must not be after end", param="start")
        if (last - first).days + 1 > MAX_CHART_DAYS:
            raise InvalidRequest(f"a date range covers at most {MAX_CHART_DAYS} days",
                                 param="start")
        return cls(first, last, metric)


async def daily_usage(db: Database, account_id: int | None, span: ChartRange,
                      flt: UsageFilter | None = None) -> tuple[list[date], dict[str, list[int]]]:
    """Every UTC day of `span` and, per model, that day's requests, tokens (in + out) or
    spend (nanodollars), as `span.metric` says; models ordered by their total, largest
    first. The usage filter's other conditions (model, ...) apply as they do to the table,
    so the chart sums the same rows as `usage_totals` for the same days."""
    day = _day_column(db, usage.c.created_at).label("day")
    measure = {"cost": func.sum(usage.c.cost), "requests": func.count(),
               "tokens": func.sum(usage.c.prompt_tokens + usage.c.completion_tokens)
               }[span.metric]
    days = replace(flt or UsageFilter(), start=span.first, end=span.last)
    query = days.apply(select(day, usage.c.model, measure), account_id).group_by(
        day, usage.c.model)
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    dates = [span.first + timedelta(days=i) for i in range(span.days)]
    index = {d: i for i, d in enumerate(dates)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * span.days)
    for raw_day, name, total in rows:
        i = index.get(_as_date(raw_day))
        if i is not None:
            series[name][i] += int(total or 0)
    return dates, dict(sorted(series.items(), key=lambda kv: -sum(kv[1])))


async def daily_spend(db: Database, account_id: int | None, days: int,
                      today: date | None = None) -> tuple[list[date], dict[str, list[int]]]:
    """The last `days` UTC days and, per model, the spend of each day (nanodollars)."""
    last = today or utcnow().date()
    return await daily_usage(db, account_id,
                             ChartRange(last - timedelta(days=days - 1), last, "cost"))


async def daily_credits(db: Database, days: int,
                        today: date | None = None) -> tuple[list[date], dict[str, list[int]]]:
    """Credit added per UTC day: "paid" (money received: Stripe, operator top-ups marked
    paid) apart from "free" (demo, sign-up, codes, unpaid top-ups). Adjustments are not in
    it: they correct, they are not bought."""
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    day = _day_column(db, ledger_entries.c.created_at).label("day")
    bucket = case((ledger_entries.c.paid.is_(True), "paid"), else_="free").label("bucket")
    query = (select(day, bucket, func.sum(ledger_entries.c.amount))
             .where(ledger_entries.c.created_at >= _midnight(first),
                    ledger_entries.c.kind.in_(("topup", "redeem")))
             .group_by(day, bucket))
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    dates = [first + timedelta(days=i) for i in range(days)]
    index = {d: i for i, d in enumerate(dates)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    for raw_day, kind, total in rows:
        i = index.get(_as_date(raw_day))
        if i is not None:
            series[kind][i] += int(total)
    return dates, dict(series)
