"""The overview at `/`: balance, held credit, top-up (redemption code, Stripe Checkout),
spend chart and latest requests; the public landing page for visitors."""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import Response

from minitoolai.accounts.store import get_account
from minitoolai.dashboard import stripe
from minitoolai.dashboard.charts import stacked_bars
from minitoolai.dashboard.codes import redeem as redeem_code
from minitoolai.dashboard.usage_query import UsageFilter, daily_spend, usage_page
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import APIError, InvalidRequest, NotFound
from minitoolai.http import json_response, read_body, runtime_of
from minitoolai.inputs import check_json
from minitoolai.money import format_usd, parse_usd

log = logging.getLogger(__name__)


async def overview(ctx: Ctx, status_code: int = 200, errors: dict | None = None,
                   amount: str = "") -> Response:
    if ctx.session is None:
        return ctx.render("landing.html")
    account = await get_account(ctx.db, ctx.account.id)  # fresh numbers, not the session's
    days = ctx.service.config.chart_days
    dates, series = await daily_spend(ctx.db, account.id, days)
    chart = stacked_bars(dates, series, title=f"Spend per model per day, last {days} days")
    recent = await usage_page(ctx.db, account.id, UsageFilter(), limit=5)
    topup = ctx.query("topup")
    notice = {"success": "Thank you! Your payment is being confirmed; the credit appears "
                         "here as soon as Stripe tells us.",
              "cancelled": "The payment was cancelled; nothing was charged."}.get(topup)
    amounts = [(a, parse_usd(a)) for a in ctx.service.config.stripe.amounts]
    return ctx.render("overview.html", account=account, chart=chart,
                      recent=recent, notice=notice, amounts=amounts,
                      stripe=ctx.service.config.stripe, status_code=status_code,
                      errors=errors or {}, amount=amount)


async def redeem(ctx: Ctx) -> Response:
    throttle = ctx.service.redeem_throttle
    key = f"account:{ctx.account.id}"
    if await throttle.blocked(key):
        return ctx.redirect("/", "Too many invalid codes. Wait 15 minutes and try again.",
                            error=True)
    try:
        amount, balance = await redeem_code(ctx.db, ctx.account.id, ctx.form.get("code", ""),
                                           by=ctx.account.email)
    except InvalidRequest as exc:
        await throttle.fail(key)
        return ctx.redirect("/", exc.message[:1].upper() + exc.message[1:] + ".", error=True)
    return ctx.redirect("/", f"Code redeemed: +${format_usd(amount)}. "
                             f"Your balance is ${format_usd(balance)}.")


async def checkout(ctx: Ctx) -> Response:
    settings = ctx.service.config.stripe
    if not settings.enabled:
        raise NotFound("card top-ups are not configured on this server")
    text = ctx.form.get("amount", "")
    try:
        amount = stripe.amount_in_range(settings, text)
    except InvalidRequest as exc:  # the overview again, the error beside the amount field
        return await overview(ctx, 400, {"amount": exc.message[:1].upper() + exc.message[1:]
                                         + "."}, amount=text[:40])
    session = await stripe.open_checkout(ctx.db, settings, ctx.account.id, ctx.account.email,
                                         amount, ctx.base_url)
    return ctx.redirect(session.url)


async def stripe_webhook(request: Request) -> Response:
    """Stripe calls this (no session, no CSRF token: the signature authenticates it)."""
    runtime = runtime_of(request)
    service = runtime.dashboard
    if service is None or not service.config.stripe.enabled:
        return json_response({"error": "stripe is not configured"}, 404)
    try:
        # bounded, and before the signature is checked: anyone can call this route
        payload = await read_body(request, service.config.stripe.max_event_bytes)
        stripe.verify_signature(service.config.stripe, payload,
                                request.headers.get("stripe-signature"))
        event = check_json(orjson.loads(payload), payload)
        if not isinstance(event, dict):
            raise InvalidRequest("the event is not a JSON object")
        outcome = await stripe.handle_event(runtime.db, event)
    except orjson.JSONDecodeError:
        return json_response({"error": "the event is not JSON"}, 400)
    except APIError as exc:
        return json_response({"error": exc.message}, exc.status_code)
    log.info("Stripe event %s (%s): %s", event.get("id"), event.get("type"), outcome)
    return json_response({"received": True, "outcome": outcome})


ROUTES = [
    ("/", page(overview, login=False), ["GET"]),
    ("/redeem", page(redeem), ["POST"]),
    ("/topup/checkout", page(checkout), ["POST"]),
    ("/billing/stripe/webhook", stripe_webhook, ["POST"]),
]
