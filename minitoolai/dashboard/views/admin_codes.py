"""Operator pages: create redemption codes in batches; see which were used, by whom, when.

Creating redirects (post/redirect/get) and shows the batch once after the redirect, sealed in
a cookie (dashboard/reveal.py); a batch too large for a cookie is shown in the POST's own
response instead (the command line suits those better)."""

from __future__ import annotations

from starlette.responses import Response

from minitoolai.dashboard.codes import MAX_BATCH, create_codes, display, list_codes
from minitoolai.dashboard.reveal import REVEAL_COOKIE, clear_reveal, set_reveal, take_reveal
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.inputs import strict_int
from minitoolai.money import MoneyFormatError, format_usd, parse_usd

PATH = "/admin/codes"
# 16 characters a code: 100 of them sealed and base64-encoded stay well under the ~4 KB a
# browser keeps for one cookie
REDIRECT_MAX_CODES = 100


async def _render(ctx: Ctx, status_code: int = 200, **values) -> Response:
    state = ctx.query("state")
    used = {"used": True, "unused": False}.get(state)
    codes = await list_codes(ctx.db, used=used, batch=ctx.query("batch") or None)
    return ctx.render("admin/codes.html", status_code=status_code, codes=codes, state=state,
                      max_batch=MAX_BATCH, **values)


async def codes_page(ctx: Ctx) -> Response:
    if REVEAL_COOKIE not in ctx.request.cookies:
        return await _render(ctx)
    shown = take_reveal(ctx) or {}
    codes = shown.get("codes") if isinstance(shown.get("codes"), list) else None
    values = {"new_codes": [display(c) for c in codes], "new_amount": shown.get("amount", 0),
              "new_batch": shown.get("batch", "")} if codes else {}
    response = await _render(ctx, **values)
    clear_reveal(response, PATH)
    return response


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
    if len(codes) <= REDIRECT_MAX_CODES:
        response = ctx.redirect(PATH, f"Created {len(codes)} code(s) worth"
                                      f" ${format_usd(amount)} each.")
        set_reveal(response, ctx, PATH, {"codes": codes, "amount": amount, "batch": batch})
        return response
    return await _render(ctx, new_codes=[display(c) for c in codes], new_amount=amount,
                         new_batch=batch)


ROUTES = [
    (PATH, page(codes_page, admin=True), ["GET"]),
    (PATH, page(create, admin=True), ["POST"]),
]
