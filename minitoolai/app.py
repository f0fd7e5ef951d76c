"""The ASGI app: routes, error envelopes, and the lifespan that starts and stops pools,
workers and the hold sweeper."""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace

import asyncpg
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from minitoolai import __version__, api_docs
from minitoolai.chat import lifecycle as chat_lifecycle
from minitoolai.chat.routes import HOT_ROUTES as chat_hot_routes
from minitoolai.chat.routes import router as chat_router
from minitoolai.config import Settings
from minitoolai.core_routes import router as core_router
from minitoolai.dashboard import lifecycle as dashboard_lifecycle
from minitoolai.dashboard.routes import router as dashboard_router
from minitoolai.dashboard.web import first_segment, page_for_error
from minitoolai.db.faults import as_unavailable
from minitoolai.db.revisions import expected_heads
from minitoolai.errors import APIError, InvalidRequest, NotFound
from minitoolai.http import error_response, seed_image_error_response
from minitoolai.images import lifecycle as images_lifecycle
from minitoolai.images.routes import router as images_router
from minitoolai.ledger.sweeper import run_sweeper
from minitoolai.observability import middleware as observability
from minitoolai.observability.metrics import metrics_endpoint
from minitoolai.observability.middleware import loggable_path
from minitoolai.runtime import Runtime
from minitoolai.speech import lifecycle as speech_lifecycle
from minitoolai.speech.routes import router as speech_router

log = logging.getLogger(__name__)

API_ROUTERS = (core_router, chat_router, images_router, speech_router)
# start order; stopped in reverse
CAPABILITIES = (chat_lifecycle, images_lifecycle, speech_lifecycle, dashboard_lifecycle)


def _is_image_path(path: str) -> bool:
    return path.startswith("/api/texttoimage")


class GatewayApp(FastAPI):
    """FastAPI, with the chat endpoints dispatched ahead of its middleware and router.

    They run on every billed request, and the stack in front of them (error middleware,
    exception middleware, exit stack, a regex match per route) costs a measurable share
    of the gateway's CPU. They answer errors in the same envelope as the rest of the app.
    """

    def __init__(self, *args,
                 hot_routes: dict[str, Callable[[Request], Awaitable[Response]]] | None = None,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hot_routes = dict(hot_routes or {})
        self.runtime = None  # set with state.runtime at startup (http.runtime_of reads it)
        # what the observability middleware labels them with (FastAPI's routes set it too)
        self._hot_route_labels = {path: SimpleNamespace(path=path.rstrip("/"))
                                  for path in self.hot_routes}
        self._entry = self._dispatch

    def wrap(self, wrapper: Callable) -> None:
        """Put an ASGI middleware around everything, the hot routes included (FastAPI's
        `add_middleware` would leave them out)."""
        self._entry = wrapper(self._entry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.hot_routes.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                scope["route"] = self._hot_route_labels[scope["path"]]
                response = await _answer(endpoint, Request(scope, receive))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _answer(endpoint, request: Request) -> Response:
    try:
        return await endpoint(request)
    except APIError as exc:
        return error_response(exc)
    except ClientDisconnect:  # see on_client_gone below
        return Response(status_code=400)
    except StarletteHTTPException as exc:
        return error_response(http_error(request, exc))
    except Exception as exc:
        return error_response(unexpected_error(request, exc))


def unexpected_error(request: Request, exc: Exception) -> APIError:
    """What to answer for an error no route meant to raise: 503 with Retry-After when it
    is the database being away (db/faults.py; the Database class already turns its own
    errors into that, this catches any that got around it), else a logged 500."""
    runtime = getattr(request.app.state, "runtime", None)
    fault = as_unavailable(exc, retry_after=runtime.db.retry_after if runtime else 2)
    if fault is not None:
        log.warning("%s %s: the database is unavailable: %s", request.method,
                    loggable_path(request.url.path), exc)
        return fault
    log.error("%s %s failed", request.method, loggable_path(request.url.path), exc_info=exc)
    return APIError("internal server error")


def http_error(request: Request, exc: StarletteHTTPException) -> APIError:
    """Starlette's HTTP exceptions (no route, wrong method) as our envelope's errors."""
    if exc.status_code == 404:
        return NotFound(f"no route for {request.method} {request.url.path}",
                        code="unknown_route")
    # Starlette's 405 carries `Allow` (RFC 9110 requires it): kept, on the page as in JSON
    err = APIError(str(exc.detail), headers=dict(exc.headers or {}))
    err.status_code = exc.status_code
    err.error_type = "invalid_request_error"
    err.code = "method_not_allowed" if exc.status_code == 405 else None
    return err


def create_app(settings: Settings, *, migrate: bool = True, workers: bool = True) -> FastAPI:
    """Build the app. `workers=False` leaves background workers (image jobs) to other
    processes (`minitoolai worker`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if migrate:
            # imported here: a server started by `serve` was migrated before it started
            # and never loads Alembic (serving.py)
            from minitoolai.db.migrate import upgrade

            await asyncio.to_thread(upgrade, settings.resolved_database_url)
        runtime = Runtime.build(settings)
        await runtime.resolve_secret_key()
        await runtime.db.sync_clock()  # holds and leases run on the database's clock
        expected_heads()  # read the migration scripts now, not in the first /health/ready
        runtime.run_workers = workers
        app.state.runtime = app.runtime = runtime  # the second for http.runtime_of
        started = []
        try:
            # settlements a dead process journaled: adopted before the sweeper's first round
            await runtime.holds.open_journal()
            for capability in CAPABILITIES:
                await capability.start(runtime)
                started.append(capability)
            runtime.background.append(asyncio.create_task(
                run_sweeper(runtime.db, settings.sweep_interval_seconds,
                            keep=runtime.holds.pending), name="hold-sweeper"))
            runtime.background.append(asyncio.create_task(
                runtime.db.run_maintenance(), name="db-maintenance"))
            runtime.background.append(asyncio.create_task(
                runtime.holds.run(), name="hold-keeper"))
            if settings.loop_monitor_interval_ms:
                from minitoolai.observability.loop_monitor import LoopMonitor

                runtime.loop_monitor = LoopMonitor(settings.loop_monitor_interval_ms / 1000,
                                                   settings.loop_stall_log_ms / 1000)
                runtime.background.append(asyncio.create_task(
                    runtime.loop_monitor.run(), name="loop-monitor"))
            if runtime.redis.configured:  # revocations pushed by the other processes
                runtime.background.append(asyncio.create_task(
                    runtime.revocations.run(), name="revocation-subscriber"))
            # everything built at start lives as long as the process: keep it out of the
            # collector's sight, and collect less often (the hot path allocates many small,
            # short-lived objects; measured at about -15% CPU per request)
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, 50, 100)
            yield
        finally:
            for task in runtime.background:
                task.cancel()
            await asyncio.gather(*runtime.background, return_exceptions=True)
            for capability in reversed(started):
                try:
                    await capability.stop(runtime)
                except Exception:  # one capability failing to stop must not block the others
                    log.exception("stopping %s failed", capability.__name__)
            try:
                await runtime.holds.close_leases()  # after the settlements drained
            except Exception:
                log.exception("giving back the credit leases failed")
            runtime.holds.close_journal()  # after the settlements drained
            await runtime.db.dispose()
            await runtime.redis.close()

    app = GatewayApp(title="MiniToolAI", version=__version__, lifespan=lifespan,
                     hot_routes=chat_hot_routes, redirect_slashes=False,
                     docs_url=None, redoc_url=None, openapi_url=api_docs.OPENAPI_PATH)
    api_docs.install(app)
    # a path under one of these first segments is an API's: its errors stay JSON; any other
    # error (an unknown address, a page's 500) is a dashboard HTML page for a browser
    api_segments = frozenset({first_segment(route.path) for router in API_ROUTERS
                              for route in router.routes}
                             | {first_segment(api_docs.OPENAPI_PATH), "metrics"})

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, exc: APIError):
        if _is_image_path(request.url.path):
            return seed_image_error_response(exc)
        page = await page_for_error(request, exc, api_segments)
        return page if page is not None else error_response(exc)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect):
        # the client hung up while sending its body: nobody is left to answer, nothing was
        # reserved yet, and it is not a server error worth a traceback
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        err = InvalidRequest(f"{param or 'request'}: {first.get('msg', 'invalid request')}",
                             param=param)
        return await on_api_error(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        return await on_api_error(request, http_error(request, exc))

    # the drivers' errors that escaped the Database class: answered here, in the route's
    # envelope, so a database fault is a 503 (see unexpected_error) and never plain text
    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(asyncpg.InterfaceError)
    @app.exception_handler(sqlite3.Error)
    async def on_driver_error(request: Request, exc: Exception):
        return await on_api_error(request, unexpected_error(request, exc))

    @app.exception_handler(Exception)
    async def on_unexpected_error(request: Request, exc: Exception):
        # Starlette's last resort (ServerErrorMiddleware): our envelope instead of its
        # plain-text 500; it still logs the traceback after
        return await on_api_error(request, unexpected_error(request, exc))

    routers = (*API_ROUTERS, dashboard_router)
    for router in routers:
        app.include_router(router)
    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    # the routers' own routes name the metrics' route labels (the app holds them wrapped)
    labelled = [route for router in routers for route in router.routes] + list(app.routes)
    app.wrap(lambda inner: observability.wrap(inner, settings, labelled))
    return app
