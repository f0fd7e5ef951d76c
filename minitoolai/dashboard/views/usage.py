"""Usage: the table of requests with date, model and key filters, CSV export, and the chart of
daily spend per model. Always the session's own account."""

from __future__ import annotations

import csv
import io
import urllib.parse
from datetime import date, timedelta

from starlette.responses import Response, StreamingResponse

from minitoolai.accounts.store import list_keys
from minitoolai.clock import utcnow
from minitoolai.dashboard.charts import METRICS, stacked_bars
from minitoolai.dashboard.usage_query import (
    CHART_RANGES,
    ChartRange,
    UsageFilter,
    daily_usage,
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
    return UsageFilter.parse(ctx.query("start"), ctx.query("end"), ctx.query("model"),
                             ctx.query("key"))


def _before(ctx: Ctx) -> int | None:
    return before_row_id(ctx.query("before"), "before")


def range_links(flt: UsageFilter, span: ChartRange, today: date) -> list[tuple[str, str, bool]]:
    """(label, query, current) per range button: each sets start and end, so the table, the
    totals and the chart below all cover the same days."""
    links = []
    for days in CHART_RANGES:
        first = today - timedelta(days=days - 1)
        params = {**flt.as_params(), "start": first.isoformat(), "end": today.isoformat(),
                  "metric": span.metric}
        links.append((f"{days} days", "?" + urllib.parse.urlencode(params),
                      flt.start == first and flt.end == today))
    return links


def metric_links(flt: UsageFilter, span: ChartRange) -> list[tuple[str, str, bool]]:
    return [(label, "?" + urllib.parse.urlencode({**flt.as_params(), "metric": metric}),
             metric == span.metric) for metric, label in METRICS.items()]


async def render_usage(ctx: Ctx, account_id: int | None, template: str, **values) -> Response:
    """The usage table and chart of one account (or all, for the operator)."""
    flt = usage_filter(ctx)
    today = utcnow().date()
    span = ChartRange.of(flt, ctx.query("metric"), ctx.service.config.chart_days, today)
    size = ctx.service.config.usage_page_size
    rows = await usage_page(ctx.db, account_id, flt, limit=size, before_id=_before(ctx))
    count, total, tokens = await usage_totals(ctx.db, account_id, flt)
    dates, series = await daily_usage(ctx.db, account_id, span, flt)
    # the filter offers the catalog's models and any other the chart period saw: cheaper than
    # a DISTINCT over every row the account ever made
    models = sorted({m.id for m in ctx.runtime.catalog} | set(series) |
                    ({flt.model} if flt.model else set()))
    title = METRICS[span.metric] + " per model per day"
    chart = stacked_bars(dates, series, title=title, metric=span.metric)
    params = flt.as_params()
    older = None
    if len(rows) == size:
        keep = {} if span.metric == "cost" else {"metric": span.metric}
        older = "?" + urllib.parse.urlencode({**params, "before": rows[-1].id, **keep})
    if "keys" not in values and account_id is not None:  # the key filter's choices
        values["keys"] = await list_keys(ctx.db, account_id)
    return ctx.render(template, rows=rows, flt=flt, models=models, tokens=tokens,
                      count=count, total=total, chart=chart, span=span, older=older,
                      ranges=range_links(flt, span, today), metrics=metric_links(flt, span),
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


def usage_csv_response(ctx: Ctx, account_id: int, filename: str) -> Response:
    """One account's usage matching the page's filters, streamed oldest first."""
    flt = usage_filter(ctx)

    async def chunks():
        yield usage_csv([], header=True)
        async for rows in usage_rows_for_csv(ctx.db, account_id, flt):
            yield usage_csv(rows, header=False)

    response = StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"'})
    security_headers(response)
    return response


async def usage_export(ctx: Ctx) -> Response:
    return usage_csv_response(ctx, ctx.account.id, "minitoolai-usage.csv")


ROUTES = [
    ("/usage", page(usage_view), ["GET"]),
    ("/usage.csv", page(usage_export), ["GET"]),
]
