"""Account settings and self-service: change the password, log out everywhere, and the
password reset by a one-time link ("Forgot your password?" on the login page).

Every form is CSRF-checked (page()) and answers with a redirect and a notice when it changed
something; a form with a wrong field is shown again with the error beside the field.
"""

from __future__ import annotations

import asyncio
import logging
import math
import smtplib

from sqlalchemy import func, select
from starlette.responses import Response

from minitoolai.accounts.store import normalise_email
from minitoolai.dashboard.passwords import (
    MAX_PASSWORD,
    new_password_problem,
    password_matches,
    set_password,
)
from minitoolai.dashboard.resets import MAX_TOKEN_LENGTH, find_reset, request_reset, use_reset
from minitoolai.dashboard.sessions import SESSION_COOKIE, create_session, end_all_sessions
from minitoolai.dashboard.tables import dashboard_sessions
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest

log = logging.getLogger(__name__)
_sending: set[asyncio.Task] = set()  # strong references to the reset emails in flight


def _client(ctx: Ctx) -> str:
    return ctx.request.client.host if ctx.request.client else "unknown"


async def _live_sessions(ctx: Ctx) -> int:
    async with ctx.db.read() as conn:
        return await conn.scalar(
            select(func.count()).select_from(dashboard_sessions).where(
                dashboard_sessions.c.account_id == ctx.account.id,
                dashboard_sessions.c.expires_at > ctx.db.now())) or 0


async def settings_page(ctx: Ctx, status_code: int = 200, errors: dict | None = None
                        ) -> Response:
    return ctx.render("account.html", status_code=status_code, errors=errors or {},
                      sessions=await _live_sessions(ctx))


async def change_password(ctx: Ctx) -> Response:
    service = ctx.service
    # a stolen session must not become a way to guess the password: the login's backoff
    pair = f"{_client(ctx)} {ctx.account.email}"
    wait = service.login_backoff.retry_after(pair)
    if wait > 0:
        minutes = max(1, math.ceil(wait / 60))
        return await settings_page(ctx, 429, {"current": f"Too many wrong passwords. Wait "
                                              f"{minutes} minute{'s' if minutes > 1 else ''}"
                                              " and try again."})
    current = ctx.form.get("current", "")[:MAX_PASSWORD]
    if not await password_matches(ctx.db, ctx.account.id, current):
        service.login_backoff.fail(pair)
        return await settings_page(ctx, 400, {"current": "This is not your current password."})
    password = ctx.form.get("password", "")
    problem = new_password_problem(password, ctx.form.get("password2", ""),
                                   service.config.min_password_length)
    if problem is not None:
        return await settings_page(ctx, 400, {problem[0]: problem[1]})
    service.login_backoff.reset(pair)
    # every session ends, this one too, and this browser gets a new one: whoever holds a
    # copy of this browser's cookie (the reason to change a password) is logged out as well
    await set_password(ctx.db, ctx.account.id, password, end_sessions=True)
    days = service.config.session_days
    token, _ = await create_session(ctx.db, ctx.account.id, days)
    response = ctx.redirect("/account", "Your password is changed. Every other session of"
                                        " your account is logged out.")
    response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="lax",
                        secure=service.cookie_secure, max_age=int(days * 86400))
    return response


async def logout_everywhere(ctx: Ctx) -> Response:
    await end_all_sessions(ctx.db, ctx.account.id)
    response = ctx.redirect("/login", "You are logged out everywhere, this browser included.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- forgotten passwords ------------------------------------------------------------------

async def forgot_form(ctx: Ctx) -> Response:
    return ctx.render("forgot.html", email="", errors={}, sent=ctx.query("sent") == "1",
                      smtp=ctx.runtime.settings.smtp.enabled,
                      minutes=ctx.service.config.password_reset_minutes)


async def forgot(ctx: Ctx) -> Response:
    settings = ctx.runtime.settings
    minutes = ctx.service.config.password_reset_minutes
    email = ctx.form.get("email", "").strip()[:320]

    def again(status: int, errors: dict) -> Response:
        return ctx.render("forgot.html", status_code=status, email=email, errors=errors,
                          sent=False, smtp=settings.smtp.enabled, minutes=minutes)

    if not settings.smtp.enabled:
        return again(200, {})  # the page says to ask the operator instead
    try:
        email = normalise_email(email)
    except InvalidRequest:
        return again(400, {"email": "Enter the email address of your account."})
    by_email, by_address = ctx.service.reset_throttle, ctx.service.reset_address_throttle
    address = _client(ctx)
    if await by_email.blocked(email) or await by_address.blocked(address):
        response = again(429, {"email": "Too many reset requests. Wait an hour and try again,"
                                        " or use the link already sent."})
        response.headers["Retry-After"] = "3600"
        return response
    await by_email.fail(email)
    await by_address.fail(address)
    # the lookup, the token and the email happen after the answer: it is the same page, in
    # the same time, whether or not the address has an account. Links are built on
    # public_url, never on the request's Host header (which a sender could forge).
    task = asyncio.get_running_loop().create_task(
        _send_reset(ctx.runtime.db, settings, email, minutes), name="send-reset-email")
    _sending.add(task)
    task.add_done_callback(_sending.discard)
    return ctx.redirect("/forgot?sent=1")


async def _send_reset(db, settings, email: str, minutes: int) -> None:
    try:
        if await request_reset(db, settings.smtp, settings.base_url, email, minutes):
            log.info("password reset link sent to %s", email)
    except (OSError, smtplib.SMTPException) as exc:
        log.error("could not send a password reset link to %s through %s:%s: %s", email,
                  settings.smtp.host, settings.smtp.port, exc)
    except Exception:  # a background task: nobody else would see it
        log.exception("sending a password reset link to %s failed", email)


def _token(ctx: Ctx) -> str:
    return ctx.request.path_params["token"][:MAX_TOKEN_LENGTH + 1]


def _dead_link(ctx: Ctx) -> Response:
    return ctx.render("reset.html", status_code=410, invalid=True, errors={}, email="")


async def reset_form(ctx: Ctx) -> Response:
    account = await find_reset(ctx.db, _token(ctx))
    if account is None:
        return _dead_link(ctx)
    return ctx.render("reset.html", invalid=False, errors={}, email=account.email)


async def reset(ctx: Ctx) -> Response:
    token = _token(ctx)
    account = await find_reset(ctx.db, token)
    if account is None:
        return _dead_link(ctx)
    password = ctx.form.get("password", "")
    problem = new_password_problem(password, ctx.form.get("password2", ""),
                                   ctx.service.config.min_password_length)
    if problem is not None:
        return ctx.render("reset.html", status_code=400, invalid=False,
                          errors={problem[0]: problem[1]}, email=account.email)
    if await use_reset(ctx.db, token, password) is None:  # used meanwhile, in another tab
        return _dead_link(ctx)
    response = ctx.redirect("/login", "Your password is changed and every session of your"
                                      " account is logged out. Log in with the new password.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


ROUTES = [
    ("/account", page(settings_page), ["GET"]),
    ("/account/password", page(change_password), ["POST"]),
    ("/account/logout-everywhere", page(logout_everywhere), ["POST"]),
    ("/forgot", page(forgot_form, login=False), ["GET"]),
    ("/forgot", page(forgot, login=False), ["POST"]),
    ("/reset/{token}", page(reset_form, login=False), ["GET"]),
    ("/reset/{token}", page(reset, login=False), ["POST"]),
]
