"""Operator pages: search accounts; one account's balance, keys, credit history and usage
(each as CSV too); credit adjustments with a reason (a ledger entry); revoking any of its
keys; disable and enable."""

from __future__ import annotations

import logging
import urllib.parse

from starlette.responses import Response, StreamingResponse

from minitoolai.accounts.store import (
    get_account,
    list_accounts,
    list_keys,
    revoke_key,
    set_account_flags,
)
from minitoolai.dashboard.passwords import set_password
from minitoolai.dashboard.sessions import end_all_sessions
from minitoolai.dashboard.views.auth import MAX_PASSWORD
from minitoolai.dashboard.views.usage import render_usage, usage_csv_response
from minitoolai.dashboard.web import Ctx, page, security_headers
from minitoolai.errors import InvalidRequest, NotFound
from minitoolai.inputs import MAX_ROW_ID, before_row_id
from minitoolai.ledger.credits import add_credit
from minitoolai.ledger.history import count_entries, entries_csv, list_entries
from minitoolai.ledger.holds import month_of
from minitoolai.money import MoneyFormatError, format_usd, parse_usd

log = logging.getLogger(__name__)


def _account_id(ctx: Ctx) -> int:
    text = ctx.request.path_params["account_id"]
    # "²".isdigit() is true, and ids are 32-bit
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > MAX_ROW_ID:
        raise NotFound(f"no account with id {text[:20]}")
    return int(text)


async def accounts_page(ctx: Ctx) -> Response:
    search = ctx.query("q").strip()[:200]
    rows = await list_accounts(ctx.db, search or None, limit=500)
    return ctx.render("admin/accounts.html", accounts=rows, q=search)


HISTORY_PAGE = 50
CSV_BATCH = 1000


async def account_page(ctx: Ctx) -> Response:
    account = await get_account(ctx.db, _account_id(ctx))
    keys = await list_keys(ctx.db, account.id)
    # the credit history: every entry but the per-request charges (the usage table below)
    history = await list_entries(ctx.db, account.id, credits_only=True, limit=HISTORY_PAGE,
                                 before_id=before_row_id(ctx.query("entries_before"),
                                                         "entries_before"))
    history_count, _ = await count_entries(ctx.db, account.id, credits_only=True)
    older_entries = None
    if len(history) == HISTORY_PAGE:
        older_entries = "?" + urllib.parse.urlencode({"entries_before": history[-1].id})
    now = ctx.db.now()
    return await render_usage(ctx, account.id, "admin/account.html", account=account, keys=keys,
                              csv_url=f"/admin/accounts/{account.id}/usage.csv",
                              history=history, history_count=history_count,
                              older_entries=older_entries, now=now, month=month_of(now))


async def usage_export(ctx: Ctx) -> Response:
    """The account's usage as CSV, with the page's filters (the customer's own export)."""
    account = await get_account(ctx.db, _account_id(ctx))
    return usage_csv_response(ctx, account.id, f"minitoolai-usage-{account.id}.csv")


async def revoke(ctx: Ctx) -> Response:
    """Revoke any of this account's keys: refused at once here and, with Redis, on every
    server (accounts/revocation.py), exactly as when the customer revokes it."""
    account_id = _account_id(ctx)
    key = await revoke_key(ctx.db, ctx.request.path_params["key_id"], account_id)
    pushed = await ctx.runtime.revocations.key_revoked(key.id)
    log.info("key %s of account %s revoked by operator %s", key.id, account_id,
             ctx.account.email)
    where = ("every server refuses it now" if pushed else
             "this server refuses it now, the others within"
             f" {ctx.runtime.settings.auth_cache_seconds:g} s")
    return ctx.redirect(f"/admin/accounts/{account_id}",
                        f"Revoked {key.name} ({key.prefix}…): {where}.")


async def history_csv(ctx: Ctx) -> Response:
    """The account's credit history as CSV, newest first; `?charges=1` adds every charge
    (streamed in batches: an account can have millions)."""
    account = await get_account(ctx.db, _account_id(ctx))
    credits_only = ctx.query("charges") != "1"

    async def chunks():
        yield entries_csv([], header=True)
        before = None
        while True:
            batch = await list_entries(ctx.db, account.id, credits_only=credits_only,
                                       limit=CSV_BATCH, before_id=before)
            if not batch:
                return
            yield entries_csv(batch, header=False)
            before = batch[-1].id

    name = f"minitoolai-ledger-{account.id}.csv"
    response = StreamingResponse(chunks(), media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})
    security_headers(response)
    return response


async def adjust(ctx: Ctx) -> Response:
    account_id = _account_id(ctx)
    reason = ctx.form.get("reason", "").strip()[:500]
    url = f"/admin/accounts/{account_id}"
    if not reason:
        return ctx.redirect(url, "Give a reason for the adjustment: it goes in the ledger.",
                            error=True)
    try:
        amount = parse_usd(ctx.form.get("amount", ""))
    except MoneyFormatError as exc:
        return ctx.redirect(url, f"Not an amount: {exc}.", error=True)
    # money received for it (a bank transfer, an invoice paid): a paid top-up, which the
    # platform page counts as revenue; otherwise an adjustment (a gift, a correction)
    paid = ctx.form.get("paid") == "1"
    if paid and amount <= 0:
        return ctx.redirect(url, "Only credit added (a positive amount) can be marked paid.",
                            error=True)
    try:
        balance = await add_credit(ctx.db, account_id, amount,
                                   kind="topup" if paid else "adjustment", note=reason,
                                   by=ctx.account.email, paid=paid)
    except InvalidRequest as exc:
        return ctx.redirect(url, f"Not adjusted: {exc.message}.", error=True)
    sign = "+" if amount > 0 else "-"
    return ctx.redirect(url, f"Adjusted by {sign}${format_usd(abs(amount))}; balance "
                             f"${format_usd(balance)}.")


async def set_disabled(ctx: Ctx) -> Response:
    account_id = _account_id(ctx)
    disable = ctx.form.get("disabled") == "1"
    if disable and account_id == ctx.account.id:
        return ctx.redirect(f"/admin/accounts/{account_id}", "You cannot disable yourself.",
                            error=True)
    await set_account_flags(ctx.db, account_id, disabled=disable)
    if disable:
        # keys stop at once in this process and, with Redis, in every other (without it,
        # within the auth cache's seconds); the dashboard sessions go too
        await ctx.runtime.revocations.account_disabled(account_id)
        await end_all_sessions(ctx.db, account_id)
    return ctx.redirect(f"/admin/accounts/{account_id}",
                        "Account disabled." if disable else "Account enabled.")


async def set_password_(ctx: Ctx) -> Response:
    """For accounts made on the command line (which have no password) and forgotten ones."""
    account_id = _account_id(ctx)
    password = ctx.form.get("password", "")
    url = f"/admin/accounts/{account_id}"
    minimum = ctx.service.config.min_password_length
    if not minimum <= len(password) <= MAX_PASSWORD:
        return ctx.redirect(url, f"Choose a password of {minimum} to {MAX_PASSWORD} characters.",
                            error=True)
    account = await get_account(ctx.db, account_id)
    await set_password(ctx.db, account.id, password)
    await end_all_sessions(ctx.db, account.id)  # whoever was logged in must log in anew
    return ctx.redirect(url, f"Password set for {account.email}.")


ROUTES = [
    ("/admin/accounts", page(accounts_page, admin=True), ["GET"]),
    ("/admin/accounts/{account_id}", page(account_page, admin=True), ["GET"]),
    ("/admin/accounts/{account_id}/ledger.csv", page(history_csv, admin=True), ["GET"]),
    ("/admin/accounts/{account_id}/usage.csv", page(usage_export, admin=True), ["GET"]),
    ("/admin/accounts/{account_id}/keys/{key_id}/revoke", page(revoke, admin=True), ["POST"]),
    ("/admin/accounts/{account_id}/credit", page(adjust, admin=True), ["POST"]),
    ("/admin/accounts/{account_id}/disabled", page(set_disabled, admin=True), ["POST"]),
    ("/admin/accounts/{account_id}/password", page(set_password_, admin=True), ["POST"]),
]
