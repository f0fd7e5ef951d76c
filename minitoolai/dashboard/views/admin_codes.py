"""Operator pages: create redemption codes in batches; see which were used, by whom, when,
page back through all of them; void an unused one (who and when stay on the code).

Creating redirects (post/redirect/get) and shows the batch once after the redirect, sealed in
a cookie (dashboard/reveal.py); a batch too large for a cookie is shown in the POST's own
response instead (the command line suits those better)."""

from __future__ import annotations

import urllib.parse

from starlette.responses import Response

from minitoolai.dashboard.codes import MAX_BATCH, create_codes, display, list_codes, void_code
from minitoolai.dashboard.reveal import REVEAL_COOKIE, clear_reveal, set_reveal, take_reveal
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest, NotFound
from minitoolai.inputs import MAX_ROW_ID, strict_int
from minitoolai.money import MoneyFormatError, format_usd, parse_usd

PATH = "/admin/codes"
# 16 characters a code: 100 of them sealed and base64-encoded stay well under the ~4 KB a
# browser keeps for one cookie
REDIRECT_MAX_CODES = 100


PAGE = 500


def _before(ctx: Ctx) -> int | None:
    text = ctx.query("before").strip()
    # a row id: anything above the largest id means "from the newest", like no value
    return min(strict_int(text, "before"), MAX_ROW_ID) if text else None


async def _render(ctx: Ctx, status_code: int = 200, **values) -> Response:
    state = ctx.query("state")
    used = {"used": True, "unused": False}.get(state)
    batch = ctx.query("batch") or None
    # cursor paging, newest first, like the usage table: `before` is the last id shown
    codes = await list_codes(ctx.db, used=used, batch=batch, limit=PAGE,
                             before_id=_before(ctx), voided=True if state == "voided" else None)
    older = None
    if len(codes) == PAGE:
        params = {k: v for k, v in (("state", state), ("batch", batch)) if v}
        older = PATH + "?" + urllib.parse.urlencode({**params, "before": codes[-1].id})
    return ctx.render("admin/codes.html", status_code=status_code, codes=codes, state=state,
                      max_batch=MAX_BATCH, older=older, paged=bool(ctx.query("before")),
                      **values)


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


async def void(ctx: Ctx) -> Response:
    text = ctx.request.path_params["code_id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_ROW_ID:
        raise NotFound(f"no code with id {text[:20]}")
    back = PATH + ("?state=" + ctx.form["state"] if ctx.form.get("state") in STATES else "")
    try:
        code = await void_code(ctx.db, int(text), ctx.account.email)
    except InvalidRequest as exc:
        return ctx.redirect(back, f"Not voided: {exc.message}.", error=True)
    return ctx.redirect(back, f"Voided {code.display} (worth ${format_usd(code.amount)}): it"
                              " can no longer be redeemed.")


STATES = ("used", "unused", "voided")

ROUTES = [
    (PATH, page(codes_page, admin=True), ["GET"]),
    (PATH, page(create, admin=True), ["POST"]),
    (PATH + "/{code_id}/void", page(void, admin=True), ["POST"]),
]
