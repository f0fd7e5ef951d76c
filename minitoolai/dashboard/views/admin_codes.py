"""Operator pages: create redemption codes in batches; see which were used, by whom, when."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.dashboard.codes import MAX_BATCH, create_codes, display, list_codes
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.inputs import strict_int
from minitoolai.money import MoneyFormatError, parse_usd


async def _render(ctx: Ctx, status_code: int = 200, **values) -> Response:
    state = ctx.query("state")
    used = {"used": True, "unused": False}.get(state)
    codes = await list_codes(ctx.db, used=used, batch=ctx.query("batch") or None)
    return ctx.render("admin/codes.html", status_code=status_code, codes=codes, state=state,
                      max_batch=MAX_BATCH, **values)


async def codes_page(ctx: Ctx) -> Response:
    return await _render(ctx)


async def create(ctx: Ctx) -> Response:
    count_text = ctx.form.get("count", "1").strip()
    batch = ctx.form.get("batch", "").strip()[:200]
    try:
        amount = parse_usd(ctx.form.get("amount", ""))
        count = strict_int(count_text, "count", max_digits=6)
        codes = await create_codes(ctx.db, amount, count, batch=batch,
                                   created_by=ctx.account.id)
    except MoneyFormatError as exc:
        return await _render(ctx, 400, error=str(exc))
    except InvalidRequest as exc:
        return await _render(ctx, 400, error=exc.message)
    return await _render(ctx, new_codes=[display(c) for c in codes], new_amount=amount,
                         new_batch=batch)


ROUTES = [
    ("/admin/codes", page(codes_page, admin=True), ["GET"]),
    ("/admin/codes", page(create, admin=True), ["POST"]),
]
