"""Request plumbing shared by the dashboard's pages: who is logged in, CSRF checks, rendering
templates, redirects with a one-time notice, and security headers.

Pages are plain Starlette routes wrapped by `page(...)`, which loads the session, refuses
anonymous visitors (redirect to /login) and non-admins on admin pages (403), checks the CSRF
token of every POST, and turns the API's exceptions into an HTML page with the same status.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from minitoolai.accounts.store import Account
from minitoolai.dashboard.service import DashboardService
from minitoolai.dashboard.sessions import (
    ANON_CSRF_COOKIE,
    SESSION_COOKIE,
    Session,
    load_session,
    new_token,
    tokens_match,
)
from minitoolai.errors import APIError, NotFound
from minitoolai.http import read_body, runtime_of
from minitoolai.inputs import check_text
from minitoolai.observability import exchange
from minitoolai.observability.exchange import note_error

log = logging.getLogger(__name__)
FLASH_COOKIE = "mtai_flash"
ERROR_MARK = "!"  # a flash notice that starts with it is an error (set by redirect only)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
CSP = ("default-src 'self'; img-src 'self' data: blob: http: https:; "
       "media-src 'self' data: blob: http: https:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self' https:")


@dataclass
class Ctx:
    """One request to a dashboard page."""

    request: Request
    runtime: Any
    service: DashboardService
    session: Session | None
    form: dict[str, str] = field(default_factory=dict)
    anon_csrf: str | None = None  # set when this response must plant the pre-login token

    @property
    def account(self) -> Account:
        assert self.session is not None
        return self.session.account

    @property
    def db(self):
        return self.runtime.db

    @property
    def csrf_token(self) -> str:
        if self.session is not None:
            return self.session.csrf_token
        token = self.request.cookies.get(ANON_CSRF_COOKIE)
        if not token or len(token) > 128:
            token = self.anon_csrf = self.anon_csrf or new_token()
        return token

    @property
    def base_url(self) -> str:
        """The server's URL as customers reach it: public_url when configured, else the
        address this request came to (right behind a plain port or an unconfigured proxy)."""
        if self.runtime.settings.public_url:
            return self.runtime.settings.base_url
        return str(self.request.base_url).rstrip("/")

    def query(self, name: str, default: str = "") -> str:
        return self.request.query_params.get(name, default)

    def render(self, template: str, status_code: int = 200, **values) -> HTMLResponse:
        flash = self.request.cookies.get(FLASH_COOKIE)
        notice = urllib.parse.unquote(flash)[:300] if flash else None
        flash_error = bool(notice and notice.startswith(ERROR_MARK))
        html = self.service.templates.get_template(template).render(
            user=self.session.account if self.session else None, csrf_token=self.csrf_token,
            base_url=self.base_url, path=self.request.url.path,
            flash=notice[len(ERROR_MARK):] if flash_error else notice, flash_error=flash_error,
             stripe_enabled=self.service.config.stripe.enabled,
            signup_enabled=self.service.config.signup, **values)
        response = HTMLResponse(html, status_code=status_code)
        if flash:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return self.finish(response)

    def redirect(self, url: str, notice: str | None = None, *, error: bool = False) -> Response:
        """303 to `url`, with a one-time notice for the next page: an error (shown as one,
        announced with role="alert") or a confirmation."""
        response = RedirectResponse(url, status_code=303)
        if notice:
            if error:
                notice = ERROR_MARK + notice
            response.set_cookie(FLASH_COOKIE, urllib.parse.quote(notice)[:300], max_age=60,
                                path="/", httponly=True, samesite="lax",
                                secure=self.service.cookie_secure)
        return self.finish(response)

    def finish(self, response: Response) -> Response:
        if self.anon_csrf:
            response.set_cookie(ANON_CSRF_COOKIE, self.anon_csrf, path="/", httponly=True,
                                samesite="lax", secure=self.service.cookie_secure)
        security_headers(response)
        return response


def security_headers(response: Response) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Cache-Control", "no-store")


class CsrfRejected(APIError):
    status_code = 403
    error_type = "permission_error"
    default_code = "csrf_failed"


Handler = Callable[[Ctx], Awaitable[Response]]


async def _read_form(request: Request, limit: int) -> dict[str, str]:
    """The POSTed form, read through the bounded reader (413 past `limit`, before any
    parsing or CSRF check), every field checked for storable text."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("application/x-www-form-urlencoded",
                                    "multipart/form-data")):
        return {}
    body = await read_body(request, limit)

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=0, max_fields=200)
    return {k: check_text(v, k) for k, v in form.items() if isinstance(v, str)}


def _check_url_text(request: Request) -> None:
    """Query and path parameters are text too: a NUL in them is a 400 on every database."""
    for name, value in request.query_params.multi_items():
        check_text(name, "query parameter")
        check_text(value, name)
    for name, value in request.path_params.items():
        if isinstance(value, str):
            check_text(value, name)


def _csrf_ok(ctx: Ctx) -> bool:
    given = ctx.form.get(CSRF_FIELD) or ctx.request.headers.get(CSRF_HEADER)
    if ctx.session is not None:
        return tokens_match(ctx.session.csrf_token, given)
    return tokens_match(ctx.request.cookies.get(ANON_CSRF_COOKIE), given)


def page(handler: Handler, *, login: bool = True, admin: bool = False,
         csrf: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a page handler with session loading, access checks, CSRF and error pages."""

    async def endpoint(request: Request) -> Response:
        runtime = runtime_of(request)
        service: DashboardService | None = runtime.dashboard
        if service is None:
            raise NotFound("the dashboard is disabled", code="dashboard_disabled")
        session = await load_session(runtime.db, request.cookies.get(SESSION_COOKIE))
        ctx = Ctx(request, runtime, service, session)
        try:
            if login and session is None:
                if request.method != "GET":
                    return ctx.finish(error_page(ctx, 401, "Please log in again."))
                target = "/login?next=" + urllib.parse.quote(request.url.path)
                return ctx.redirect(target)
            if admin and not session.account.is_admin:
                return error_page(ctx, 403, "This page is for the operators of the platform.")
            _check_url_text(request)
            if request.method == "POST":
                ctx.form = await _read_form(request, service.config.max_form_bytes)
                if csrf and not _csrf_ok(ctx):
                    raise CsrfRejected("the form's security token is missing or stale: "
                                       "reload the page and try again")
            return await handler(ctx)
        except APIError as exc:
            if request.headers.get("accept", "").startswith("application/json"):
                raise  # the playground's script reads the API envelope
            return error_page(ctx, exc.status_code, exc.message)

    endpoint.__name__ = handler.__name__
    return endpoint


def error_page(ctx: Ctx, status: int, message: str) -> Response:
    return ctx.render("error.html", status_code=status, status=status, message=message,
                      request_id=exchange.request_id())


def first_segment(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


async def page_for_error(request: Request, exc: APIError,
                         api_segments: frozenset[str]) -> Response | None:
    """The HTML error page for an error the app answers outside a page handler (no route,
    wrong method, an unexpected exception), when the request is for the dashboard: the
    dashboard is on, the path is not under an API's first segment (`/api`, `/v1`,
    `/health`, ...), and the client did not ask for JSON. None: answer the JSON envelope."""
    runtime = getattr(request.app.state, "runtime", None)
    service = getattr(runtime, "dashboard", None)
    if service is None or first_segment(request.url.path) in api_segments \
            or request.headers.get("accept", "").startswith("application/json"):
        return None
    try:
        session = await load_session(runtime.db, request.cookies.get(SESSION_COOKIE))
    except Exception:  # noqa: BLE001 - the database may be why this page is shown
        session = None
    ctx = Ctx(request, runtime, service, session)
    message = exc.message
    if exc.code == "unknown_route":
        message = "There is no page at this address. Check the link, or start again from" \
                  " the overview."
    elif exc.code == "method_not_allowed":
        message = f"This address does not take {request.method} requests."
    elif exc.status_code >= 500 and exc.status_code != 503:
        message = "Something went wrong on our side. It has been logged; if it happens" \
                  " again, give the operator the request id below."
    try:
        response = error_page(ctx, exc.status_code, message)
    except Exception:  # a broken template must not hide the first error
        log.exception("the dashboard's error page failed")
        return None
    for name, value in (exc.headers or {}).items():
        response.headers.setdefault(name, value)
    note_error(exc.error_type)
    return response
