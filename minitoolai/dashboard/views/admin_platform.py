"""Operator pages: the platform overview (totals, revenue and usage charts) and the live
catalog with provider health and the image queue."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.dashboard.charts import stacked_bars
from minitoolai.dashboard.platform_stats import image_queue, provider_health, totals
from minitoolai.dashboard.usage_query import daily_credits, daily_spend
from minitoolai.dashboard.views.apidocs import price_rows
from minitoolai.dashboard.web import Ctx, page
from minitoolai.ledger.history import money_in

CREDIT_LABELS = {"paid": "paid (revenue)", "free": "free (demo, sign-up, codes)"}


async def overview(ctx: Ctx) -> Response:
    days = ctx.service.config.chart_days
    dates, spend = await daily_spend(ctx.db, None, days)
    usage_chart = stacked_bars(dates, spend, title=f"Usage (charged) per model, {days} days")
    dates, credits = await daily_credits(ctx.db, days)
    credits = {CREDIT_LABELS[k]: credits[k] for k in CREDIT_LABELS if k in credits}
    revenue_chart = stacked_bars(dates, credits, title=f"Credit added per day, {days} days")
    return ctx.render("admin/overview.html", totals=await totals(ctx.db),
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
