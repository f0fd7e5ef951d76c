"""The Prometheus metrics, and the `/metrics` endpoint that exposes them.

The metric objects are module-level, like loggers: prometheus-client is built around one
registry per process, and in multiprocess mode (`serve --workers N`) each process writes
its samples to files under PROMETHEUS_MULTIPROC_DIR that the scraped process adds up.
Every name and label is documented in docs/operations.md; labels stay low-cardinality
(route templates, model ids, provider names, error types), never a raw path or an id.

Gauges about the whole deployment (holds open, image jobs waiting) are read from the
database when scraped, so every API process reports the same truth.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import time
from pathlib import Path
from typing import Self

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from minitoolai.errors import AuthenticationFailed, DatabaseUnavailable, NotFound

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own variable
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
JOB_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

# ---- HTTP (the middleware) ----------------------------------------------------------------
REQUESTS = Counter("minitoolai_http_requests", "HTTP requests answered",
                   ("route", "method", "status", "model"))
LATENCY = Histogram("minitoolai_http_request_duration_seconds",
                    "Time from the request to the end of its response (a stream's end)",
                    ("route", "model"), buckets=LATENCY_BUCKETS)
ERRORS = Counter("minitoolai_http_errors",
                 "Error answers (status >= 400, or an error sent in a stream) by error type",
                 ("route", "model", "type"))

# ---- money (counted after the settlement committed) ---------------------------------------
TOKENS = Counter("minitoolai_tokens", "Tokens charged", ("model", "kind"))
CHARGED = Counter("minitoolai_charged_nanodollars", "Nanodollars charged (1 USD = 1e9)",
                  ("model", "endpoint"))
CAPPED = Counter("minitoolai_charges_capped",
                 "Requests whose usage cost more than their hold: charged the hold (the"
                 " upstream counted past the bound it was given)", ("model",))
SETTLE_FAILURES = Counter("minitoolai_settle_failures",
                          "Settlements that failed (the hold stays until swept)")
LEDGER_BATCH = Histogram("minitoolai_ledger_batch_size",
                         "Ledger operations committed together (group commit)",
                         buckets=(1, 2, 4, 8, 16, 32, 64, 128))
LEDGER_FLUSH = Histogram("minitoolai_ledger_flush_seconds",
                         "Time one group-committed ledger transaction took, from BEGIN to"
                         " COMMIT (SQLite: on the event loop)", buckets=STAGE_BUCKETS)
STAGE = Histogram("minitoolai_chat_stage_seconds",
                  "Time of one stage of a chat request: reserve (the hold, queueing for the"
                  " group commit included), upstream (to its first byte or whole answer),"
                  " relay (first byte to the stream's end), settle",
                  ("stage",), buckets=STAGE_BUCKETS)
LOOP_LAG = Histogram("minitoolai_event_loop_lag_seconds",
                     "How late the event loop's monitor woke up (loop_monitor_interval_ms)",
                     buckets=STAGE_BUCKETS)
GC_PAUSE = Histogram("minitoolai_gc_pause_seconds",
                     "Garbage collections of the server process (with the loop monitor on)",
                     buckets=STAGE_BUCKETS)
LOOP_LAG_MAX = Gauge("minitoolai_event_loop_lag_max_seconds",
                     "The largest event-loop lag since the previous scrape of /metrics",
                     multiprocess_mode="max")
LOOP_LAG_MAX_ON_CPU = Gauge("minitoolai_event_loop_busy_max_seconds",
                            "Of the loop's lags since the previous scrape, the most CPU time"
                            " its thread spent in one (the code's own stall, not the OS's)",
                            multiprocess_mode="max")
# read from the database at scrape time: the same in every process
HOLDS_OPEN = Gauge("minitoolai_holds_open", "Credit holds open (all processes)",
                   multiprocess_mode="mostrecent")
HOLDS_HELD = Gauge("minitoolai_holds_nanodollars", "Nanodollars held by open holds",
                   multiprocess_mode="mostrecent")

# ---- upstreams ----------------------------------------------------------------------------
UPSTREAM_LATENCY = Histogram("minitoolai_upstream_duration_seconds",
                             "Time to an upstream's first byte (a stream) or whole answer",
                             ("provider",), buckets=UPSTREAM_BUCKETS)
UPSTREAM_ERRORS = Counter("minitoolai_upstream_errors", "Upstream failures by error type",
                          ("provider", "type"))

# ---- images ---------------------------------------------------------------------------------
IMAGE_JOBS = Gauge("minitoolai_image_jobs", "Image jobs not finished, by state (submitting, queued, processing)",
                   ("state",), multiprocess_mode="mostrecent")
IMAGE_OUTCOMES = Counter("minitoolai_image_job_outcomes",
                         "Image job runs ended: success, error, retried, requeued",
                         ("model", "outcome"))
IMAGE_SECONDS = Histogram("minitoolai_image_job_duration_seconds",
                          "Submission to success of an image job", ("model",),
                          buckets=JOB_BUCKETS)


RESERVE_SECONDS = STAGE.labels("reserve")
SETTLE_SECONDS = STAGE.labels("settle")
RELAY_SECONDS = STAGE.labels("relay")


def count_settled(endpoint: str, model: str, charged: int, prompt_tokens: int,
                  completion_tokens: int) -> None:
    """A settlement committed: count its money and tokens."""
    charged_series, prompt_series, completion_series = _settled_series(model, endpoint)
    if charged:
        charged_series.inc(charged)
    if prompt_tokens:
        prompt_series.inc(prompt_tokens)
    if completion_tokens:
        completion_series.inc(completion_tokens)


@functools.lru_cache(maxsize=4096)
def _settled_series(model: str, endpoint: str) -> tuple:
    """The children of one (model, endpoint): labels() costs more than the increment."""
    return (CHARGED.labels(model, endpoint), TOKENS.labels(model, "prompt"),
            TOKENS.labels(model, "completion"))


@functools.lru_cache(maxsize=256)
def _upstream_series(provider: str):
    return UPSTREAM_LATENCY.labels(provider)  # labels() costs more than the observation


class UpstreamTimer:
    """Times one upstream call and counts its failure: `with UpstreamTimer(name): ...`."""

    __slots__ = ("provider", "started")

    def __init__(self, provider: str) -> None:
        self.provider = provider

    def __enter__(self) -> Self:
        self.started = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _upstream_series(self.provider).observe(time.perf_counter() - self.started)
        if exc is not None:
            kind = getattr(exc, "error_type", None) or exc_type.__name__
            UPSTREAM_ERRORS.labels(self.provider, kind).inc()


# ---- multiprocess mode ------------------------------------------------------------------------
def multiprocess_dir() -> Path | None:
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def prepare_multiprocess_dir() -> Path | None:
    """At `serve` start, before the workers: empty the directory (samples of processes of
    an earlier run would be added to this one's), all but this process's own files (it
    has them open already, and with one worker it serves the requests itself)."""
    directory = multiprocess_dir()
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
        mine = f"_{os.getpid()}.db"
        for stale in directory.glob("*.db"):
            if not stale.name.endswith(mine):
                stale.unlink()
    return directory


def _registry() -> CollectorRegistry:
    if multiprocess_dir() is None:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


# ---- the endpoint ---------------------------------------------------------------------------
async def _read_database_gauges(runtime) -> None:
    from minitoolai.db.tables import holds
    from minitoolai.images.tables import UNFINISHED, image_jobs

    try:
        async with runtime.db.read() as conn:
            count, total = (await conn.execute(
                select(func.count(), func.coalesce(func.sum(holds.c.amount), 0))
                .select_from(holds))).one()
            states = dict((await conn.execute(
                select(image_jobs.c.state, func.count()).where(
                    image_jobs.c.state.in_(UNFINISHED))
                .group_by(image_jobs.c.state))).all())
    except (SQLAlchemyError, OSError, DatabaseUnavailable) as exc:
        # the scrape still answers, without these: a database outage is when an operator
        # needs the rest of the metrics most (Prometheus would mark the target down)
        log.warning("metrics: cannot read holds and image jobs from the database: %s", exc)
        return
    HOLDS_OPEN.set(count)
    HOLDS_HELD.set(total)
    for state in UNFINISHED:
        IMAGE_JOBS.labels(state).set(states.get(state, 0))


async def metrics_endpoint(request: Request) -> Response:
    runtime = request.app.state.runtime
    settings = runtime.settings
    if not settings.metrics_enabled:
        raise NotFound(f"no route for {request.method} {request.url.path}",
                       code="unknown_route")
    if settings.metrics_token:
        given = request.headers.get("authorization", "")
        expected = "Bearer " + settings.metrics_token
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise AuthenticationFailed("/metrics needs 'Authorization: Bearer <metrics_token>'",
                                       headers={"WWW-Authenticate": "Bearer"})
    await _read_database_gauges(runtime)
    monitor = getattr(runtime, "loop_monitor", None)
    if monitor is not None:
        lag, busy = monitor.take_max()
        LOOP_LAG_MAX.set(lag)
        LOOP_LAG_MAX_ON_CPU.set(busy)
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
