"""Sign up, log in, log out."""

from __future__ import annotations

import math

from starlette.responses import Response

from minitoolai.accounts.store import create_account, normalise_email
from minitoolai.dashboard.passwords import (
    MAX_PASSWORD,
    check_login,
    new_password_problem,
    set_password,
)
from minitoolai.dashboard.sessions import (
    ANON_CSRF_COOKIE,
    SESSION_COOKIE,
    create_session,
    end_session,
)
from minitoolai.dashboard.web import Ctx, page
from minitoolai.errors import InvalidRequest
from minitoolai.ledger.credits import add_credit
from minitoolai.money import parse_usd

__all__ = ["MAX_PASSWORD", "ROUTES"]

WINDOW_SECONDS = 900  # the failure throttles' window (FailureThrottle default)


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never let ?next= send a user to another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _client(ctx: Ctx) -> str:
    return ctx.request.client.host if ctx.request.client else "unknown"


async def _logged_in(ctx: Ctx, account_id: int, target: str) -> Response:
    token, _ = await create_session(ctx.db, account_id, ctx.service.config.session_days)
    response = ctx.redirect(_safe_next(target))
    response.set_cookie(SESSION_COOKIE, token, path="/", httponly=True, samesite="lax",
                        secure=ctx.service.cookie_secure,
                        max_age=int(ctx.service.config.session_days * 86400))
    response.delete_cookie(ANON_CSRF_COOKIE, path="/")
    return response


async def login_form(ctx: Ctx) -> Response:
    if ctx.session is not None:
        return ctx.redirect("/")
    return ctx.render("login.html", next=_safe_next(ctx.query("next")), email="", errors={})


async def login(ctx: Ctx) -> Response:
    email = ctx.form.get("email", "").strip().lower()[:320]
    password = ctx.form.get("password", "")[:MAX_PASSWORD]
    target = _safe_next(ctx.form.get("next"))
    service = ctx.service
    backoff, by_pair, by_address = (service.login_backoff, service.login_throttle,
                                    service.address_throttle)
    address = _client(ctx)
    pair = f"{address} {email}"
    wait = backoff.retry_after(pair)
    if wait <= 0 and by_pair is not None and await by_pair.blocked(pair):
        wait = WINDOW_SECONDS
    if wait > 0 or await by_address.blocked(address):
        seconds = math.ceil(wait) if wait > 0 else WINDOW_SECONDS
        minutes = max(1, round(seconds / 60))
        response = ctx.render("login.html", status_code=429, next=target, email=email,
                              errors={}, error=f"Too many failed attempts. Wait {minutes} minute"
                                    f"{'s' if minutes > 1 else ''} and try again.")
        response.headers["Retry-After"] = str(seconds)
        return response
    account = await check_login(ctx.db, email, password)
    if account is None:
        backoff.fail(pair)
        if by_pair is not None:
            await by_pair.fail(pair)
        await by_address.fail(address)
        # one message for both fields: which one was wrong is not for a guesser to learn
        return ctx.render("login.html", status_code=401, next=target, email=email,
                          errors={"password": "Wrong email or password."})
    if account.disabled:
        return ctx.render("login.html", status_code=403, next=target, email=email,
                          errors={}, error="This account is disabled. Contact the operator.")
    backoff.reset(pair)
    if by_pair is not None:
        await by_pair.reset(pair)
    return await _logged_in(ctx, account.id, target)


async def signup_form(ctx: Ctx) -> Response:
    if ctx.session is not None:
        return ctx.redirect("/")
    if not ctx.service.config.signup:
        return ctx.render("error.html", status_code=403, status=403,
                          message="Sign-up is closed. Ask the operator for an account.")
    return ctx.render("signup.html", email="", name="", errors={})


async def signup(ctx: Ctx) -> Response:
    config = ctx.service.config
    if not config.signup:
        return ctx.render("error.html", status_code=403, status=403,
                          message="Sign-up is closed. Ask the operator for an account.")
    email = ctx.form.get("email", "").strip()[:320]
    name = ctx.form.get("name", "").strip()[:200]
    password = ctx.form.get("password", "")
    errors = {}
    problem = new_password_problem(password, ctx.form.get("password2", ""),
                                   config.min_password_length)
    if problem is not None:
        errors[problem[0]] = problem[1]
    try:  # every field that is wrong says so at once, not one per try
        normalise_email(email)
    except InvalidRequest as exc:
        errors["email"] = _sentence(exc.message)
    if not errors:
        try:
            account = await create_account(ctx.db, email, name)
        except InvalidRequest as exc:
            # same words whether the email is malformed or taken would hide nothing here:
            # the sign-up form has to say why it failed
            errors["email"] = _sentence(exc.message)
    if errors:
        return ctx.render("signup.html", status_code=400, email=email, name=name,
                          errors=errors)
    await set_password(ctx.db, account.id, password)
    credit = parse_usd(config.signup_credit)
    if credit:
        await add_credit(ctx.db, account.id, credit, kind="topup", note="sign-up credit",
                         reference=f"signup:{account.id}", by="sign-up")
    return await _logged_in(ctx, account.id, "/")


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + "."


async def logout(ctx: Ctx) -> Response:
    await end_session(ctx.db, ctx.request.cookies.get(SESSION_COOKIE))
    response = ctx.redirect("/login", "You are logged out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


ROUTES = [
    ("/login", page(login_form, login=False), ["GET"]),
    ("/login", page(login, login=False), ["POST"]),
    ("/signup", page(signup_form, login=False), ["GET"]),
    ("/signup", page(signup, login=False), ["POST"]),
    ("/logout", page(logout), ["POST"]),
]
