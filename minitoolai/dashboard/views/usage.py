"""Usage: the table of requests with date and model filters, CSV export, and the chart of
daily spend per model. Always the session's own account."""

from __future__ import annotations

import csv
import io
import urllib.parse

from starlette.responses import Response, StreamingResponse

from minitoolai.dashboard.charts import stacked_bars
from minitoolai.dashboard.usage_query import (
    UsageFilter,
    daily_spend,
    usage_page,
    usage_rows_for_csv,
    usage_totals,
)
from minitoolai.dashboard.web import Ctx, page, security_headers
from minitoolai.inputs import before_row_id
from minitoolai.money import format_usd

CSV_COLUMNS = ("time_utc", "request_id", "key_id", "endpoint", "model", "prompt_tokens",
               "completion_tokens", "images", "characters", "cost_usd", "estimated", "status",
               "latency_ms")


def usage_filter(ctx: Ctx) -> UsageFilter:
    return UsageFilter.parse(ctx.query("start"), ctx.query("end"), ctx.query("model"))


def _before(ctx: Ctx) -> int | None:
    return before_row_id(ctx.query("before"), "before")


async def render_usage(ctx: Ctx, account_id: int | None, template: str, **values) -> Response:
    """The usage table and chart of one account (or all, for the operator)."""
    flt = usage_filter(ctx)
    size = ctx.service.config.usage_page_size
    rows = await usage_page(ctx.db, account_id, flt, limit=size, before_id=_before(ctx))
    count, total = await usage_totals(ctx.db, account_id, flt)
    days = ctx.service.config.chart_days
    dates, series = await daily_spend(ctx.db, account_id, days)
    # the filter offers the catalog's models and any other the chart period saw: cheaper than
    # a DISTINCT over every row the account ever made
    models = sorted({m.id for m in ctx.runtime.catalog} | set(series) |
                    ({flt.model} if flt.model else set()))
    if flt.model:
        series = {m: v for m, v in series.items() if m == flt.model}
    chart, legend = stacked_bars(dates, series, title=f"Daily spend per model, last {days} days")
    params = flt.as_params()
    older = None
    if len(rows) == size:
        older = "?" + urllib.parse.urlencode({**params, "before": rows[-1].id})
    return ctx.render(template, rows=rows, flt=flt, models=models,
                      count=count, total=total, chart=chart, legend=legend, older=older,
                      csv_query=urllib.parse.urlencode(params), **values)


async def usage_view(ctx: Ctx) -> Response:
    return await render_usage(ctx, ctx.account.id, "usage.html")


def usage_csv(rows, header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([r.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), r.request_id,
                         r.key_id or "", r.endpoint, r.model, r.prompt_tokens,
                         r.completion_tokens, r.images, r.characters, format_usd(r.cost),
                         "yes" if r.estimated else "no", r.status,
                         "" if r.latency_ms is None else r.latency_ms])
    return out.getvalue()


async def usage_export(ctx: Ctx) -> Response:
    account_id, flt = ctx.account.id, usage_filter(ctx)

    async def chunks():
        yield usage_csv([], header=True)
        async for rows in usage_rows_for_csv(ctx.db, account_id, flt):
            yield usage_csv(rows, header=False)

    response = StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="minitoolai-usage.csv"'})
    security_headers(response)
    return response


ROUTES = [
    ("/usage", page(usage_view), ["GET"]),
    ("/usage.csv", page(usage_export), ["GET"]),
]
