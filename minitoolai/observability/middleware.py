"""The one ASGI middleware in front of everything (the chat hot path included: GatewayApp
wraps its own dispatch with it, see app.py): a request id on every response, the access
line, the HTTP metrics, and CORS when configured.

Per request it costs one id, one wrapped `send`, a few counter updates and one log record,
measured in bench/RESULTS.md ("Observability").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from minitoolai.errors import APIError
from minitoolai.observability import metrics
from minitoolai.observability.exchange import Exchange, begin, end

log = logging.getLogger(__name__)
ACCESS = "minitoolai.access"
access_log = logging.getLogger(ACCESS)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a path no route matched (404s): never the path
STATUS_TEXT = {code: str(code) for code in range(100, 600)}


def route_labels(routes) -> dict:
    """Each plain Starlette route's endpoint (or mount's app) -> its path template: what
    they leave in the scope is the endpoint, not the route."""
    labels: dict = {}
    for route in routes:
        target = getattr(route, "endpoint", None) or getattr(route, "app", None)
        path = getattr(route, "path", None)
        if target is not None and path is not None:
            labels.setdefault(target, path.rstrip("/") or "/")
    return labels


def route_of(scope: Scope, labels: dict) -> str:
    """The route's template ("/v1/models/{model_id}"), for labels: bounded, unlike paths."""
    route = scope.get("route")  # FastAPI's routes (and GatewayApp's hot routes) put it here
    path = getattr(route, "path", None)
    if path is not None:
        return path.rstrip("/") or "/"  # routes registered with and without the slash
    endpoint = scope.get("endpoint")
    if endpoint is not None:
        try:
            return labels.get(endpoint) or UNMATCHED
        except TypeError:  # an unhashable endpoint
            return UNMATCHED
    return UNMATCHED


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, *, access_log_enabled: bool = True,
                 routes=()) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled
        self.labels = route_labels(routes)
        # (route, method, status, model) -> its counter and histogram children: one dict
        # lookup per request instead of two labels() calls (bounded like the labels are)
        self.series: dict[tuple, tuple] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        exchange, token = begin(scope)
        header = (b"x-request-id", exchange.request_id.encode())
        status = 500  # unless a response starts
        first_byte = None

        # a plain function returning send's awaitable, not a coroutine of its own: a stream
        # sends every chunk through it, and a coroutine frame per chunk is what costs
        def send_with_id(message: Message) -> Awaitable[None]:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
                message["headers"] = [*message.get("headers", ()), header]
            return send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if first_byte is not None:  # the response is under way: uvicorn cuts it
                raise
            # a bug that escaped every handler before any answer: answer it here, so that
            # it too has its envelope and request id
            log.exception("%s %s failed", scope["method"], loggable_path(scope["path"]))
            exchange.error = APIError.error_type
            await send_with_id({"type": "http.response.start", "status": 500,
                                "headers": [(b"content-type", b"application/json")]})
            await send_with_id({"type": "http.response.body",
                                "body": APIError("internal server error").body()})
        finally:
            try:
                self._record(scope, exchange, status, started, first_byte)
            finally:
                end(token)

    def _record(self, scope: Scope, exchange: Exchange, status: int, started: float,
                first_byte: float | None) -> None:
        elapsed = time.perf_counter() - started
        route = route_of(scope, self.labels)
        model = exchange.model or ""
        method = scope["method"]
        verb = method if method in METHODS else "other"  # a client can send any method
        key = (route, verb, status, model)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = (
                metrics.REQUESTS.labels(route, verb, STATUS_TEXT.get(status, str(status)),
                                        model),
                metrics.LATENCY.labels(route, model))
        series[0].inc()
        series[1].observe(elapsed)
        error = exchange.error
        if status >= 400 or error is not None:
            metrics.ERRORS.labels(route, model, error or _status_class(status)).inc()
        if self.access_log_enabled and access_log.isEnabledFor(logging.INFO):
            path = loggable_path(scope["path"])
            fields = {
                "method": method, "path": path, "status": status,
                "latency_ms": round(elapsed * 1000, 2),
                "ttfb_ms": round((first_byte - started) * 1000, 2) if first_byte else None,
                "key_id": exchange.key_id,
                "model": exchange.model, "prompt_tokens": exchange.prompt_tokens,
                "completion_tokens": exchange.completion_tokens,
                "characters": exchange.characters, "cost_nano": exchange.cost,
                "error": error,
            }
            # the record is made here rather than by access_log.info(), which would walk
            # the stack to find its caller: the line's fields already say everything
            access_log.handle(access_log.makeRecord(
                ACCESS, logging.INFO, __file__, 0, "%s %s %d %.1fms",
                (method, path, status, elapsed * 1000), None,
                extra={"access": fields, "request_id": exchange.request_id}))


# paths whose last segment is a secret (a password reset's one-time token): logged without
# it, or anyone who reads the logs could use a link its owner opened but has not used yet
SECRET_PATHS = ("/reset/",)


def loggable_path(path: str) -> str:
    for prefix in SECRET_PATHS:
        if path.startswith(prefix):
            return prefix + "..."
    return path


def _status_class(status: int) -> str:
    return "client_error" if status < 500 else "server_error"


def wrap(app: ASGIApp, settings, routes=()) -> ASGIApp:
    """The whole middleware stack around `app`, outermost first: observability (so that
    even a CORS preflight has its request id and access line), then CORS if configured."""
    if settings.cors_allow_origins:
        app = CORSMiddleware(app, allow_origins=settings.cors_allow_origins,
                             allow_methods=["*"], allow_headers=["*"],
                             expose_headers=["x-request-id"],
                             max_age=settings.cors_max_age_seconds)
    return ObservabilityMiddleware(app, access_log_enabled=settings.access_log, routes=routes)
