"""Operator pages: the platform overview (totals, revenue and usage charts) and the live
catalog with provider health and the image queue."""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

from starlette.responses import Response

from minitoolai.clock import utcnow
from minitoolai.dashboard.charts import METRICS, stacked_bars
from minitoolai.dashboard.platform_stats import image_queue, provider_health, totals
from minitoolai.dashboard.usage_query import (
    CHART_RANGES,
    ChartRange,
    UsageFilter,
    daily_credits,
    daily_usage,
)
from minitoolai.dashboard.views.apidocs import price_rows
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.history import money_in

CREDIT_LABELS = {"paid": "paid (revenue)", "free": "free (demo, sign-up, codes)"}


def _days(ctx: Ctx) -> int:
    """`?days=` one of the range buttons (7, 30, 90), else the configured default."""
    text = ctx.query("days").strip()
    if not text:
        return ctx.service.config.chart_days
    if text not in {str(d) for d in CHART_RANGES}:
        raise InvalidRequest(f"days must be one of {', '.join(map(str, CHART_RANGES))}",
                             param="days")
    return int(text)


async def overview(ctx: Ctx) -> Response:
    days = _days(ctx)
    last = utcnow().date()
    span = ChartRange.of(UsageFilter(start=last - timedelta(days=days - 1), end=last),
                         ctx.query("metric"), days, last)
    dates, usage_series = await daily_usage(ctx.db, None, span)
    usage_chart = stacked_bars(dates, usage_series, metric=span.metric,
                               title=f"{METRICS[span.metric]} per model per day, {days} days")
    dates, credits = await daily_credits(ctx.db, days)
    credits = {CREDIT_LABELS[k]: credits[k] for k in CREDIT_LABELS if k in credits}
    revenue_chart = stacked_bars(dates, credits, title=f"Credit added per day, {days} days")
    ranges = [(f"{d} days", "?" + urllib.parse.urlencode({"days": d, "metric": span.metric}),
               d == days) for d in CHART_RANGES]
    metrics = [(label, "?" + urllib.parse.urlencode({"days": days, "metric": metric}),
                metric == span.metric) for metric, label in METRICS.items()]
    return ctx.render("admin/overview.html", totals=await totals(ctx.db),
                      ranges=ranges, metrics=metrics,
                      money_in=await money_in(ctx.db),
                      usage_chart=usage_chart, revenue_chart=revenue_chart, days=days)


async def catalog(ctx: Ctx) -> Response:
    return ctx.render("admin/catalog.html", prices=price_rows(ctx.runtime),
                      health=await provider_health(ctx.db, ctx.runtime.catalog),
                      queue=await image_queue(ctx.db) if ctx.runtime.images is not None
                      else None, images_on=ctx.runtime.images is not None)


ROUTES = [
    ("/admin", page(overview, admin=True), ["GET"]),
    ("/admin/catalog", page(catalog, admin=True), ["GET"]),
]
