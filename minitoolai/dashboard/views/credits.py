"""The customer's credit history: every entry that added or removed credit (top-ups, card
payments, redeemed codes, the operator's adjustments) with its note and date, paged, and as
CSV. Charges are on /usage. Always the session's own account; who made an entry is told as a
source ("card payment", "adjustment"), not as the operator's email."""

from __future__ import annotations

import csv
import io
import urllib.parse

from starlette.responses import Response, StreamingResponse

from minitoolai.dashboard.web import Ctx, page, security_headers
from minitoolai.inputs import before_row_id
from minitoolai.ledger.history import Entry, list_entries, spreadsheet_safe
from minitoolai.money import format_usd

PAGE_SIZE = 50
CSV_BATCH = 1000
CSV_COLUMNS = ("time_utc", "source", "amount_usd", "note")


def source(entry: Entry) -> str:
    if entry.kind == "redeem":
        return "redeemed code"
    if entry.kind == "adjustment":
        return "adjustment"
    if entry.kind == "refund":
        return "refund"
    if entry.created_by == "stripe":
        return "card payment"
    if entry.created_by == "sign-up":
        return "sign-up credit"
    return "top-up"


async def history_page(ctx: Ctx) -> Response:
    entries = await list_entries(ctx.db, ctx.account.id, credits_only=True, limit=PAGE_SIZE,
                                 before_id=before_row_id(ctx.query("before"), "before"))
    older = None
    if len(entries) == PAGE_SIZE:
        older = "?" + urllib.parse.urlencode({"before": entries[-1].id})
    return ctx.render("credits.html", entries=entries, older=older, source=source)


def _csv(entries: list[Entry], header: bool) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(CSV_COLUMNS)
    for e in entries:
        writer.writerow([e.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"), source(e),
                         format_usd(e.amount), spreadsheet_safe(e.note)])
    return out.getvalue()


async def history_csv(ctx: Ctx) -> Response:
    account_id = ctx.account.id

    async def chunks():
        yield _csv([], header=True)
        before = None
        while batch := await list_entries(ctx.db, account_id, credits_only=True,
                                          limit=CSV_BATCH, before_id=before):
            yield _csv(batch, header=False)
            before = batch[-1].id

    response = StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": 'attachment; filename="minitoolai-credit-history.csv"'})
    security_headers(response)
    return response


ROUTES = [
    ("/credits", page(history_page), ["GET"]),
    ("/credits.csv", page(history_csv), ["GET"]),
]
