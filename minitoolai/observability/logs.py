"""Logging, configured once at start (`serve`, each of its worker processes, `worker`).

Every line has the time (UTC), the level and the logger's name, and the request id when it
is written while a request is served. `log_format = "json"` writes one JSON object a line.
The access lines (logger `minitoolai.access`, one per request, written by the middleware)
carry their fields as attributes: key=value in text, keys of the object in JSON.

The JSON formatter is a few lines over orjson (already a dependency) rather than another
package for it.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import time
from typing import IO

import aiohttp
import asyncpg
import orjson
import sqlalchemy.exc

from minitoolai.errors import APIError
from minitoolai.observability.exchange import current

IN_MESSAGE = frozenset({"method", "path", "status", "latency_ms"})  # the access line's text
TRACE = 5  # uvicorn's level below DEBUG
LEVELS = {"critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING,
          "info": logging.INFO, "debug": logging.DEBUG, "trace": TRACE}
# uvicorn configures these itself unless told not to (serve passes log_config=None); they
# must reach the root handler like every other logger
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the id of the request being served, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            exchange = current()
            record.request_id = exchange.request_id if exchange is not None else None
        return True


# failures of a dependency (the database, Redis, an upstream, the network), not of this
# code: their traceback says nothing an operator can act on, so they print as one line
# (the full traceback returns at log_level = "debug")
OPERATIONAL = (OSError, sqlite3.OperationalError, sqlalchemy.exc.OperationalError,
               sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError,
               sqlalchemy.exc.TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.CannotConnectNowError, aiohttp.ClientError,
               APIError)


def is_operational(exc: BaseException | None) -> bool:
    return isinstance(exc, OPERATIONAL)


def exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The traceback of a bug, one line for a dependency's failure, None without one."""
    if not record.exc_info:
        return record.exc_text or None
    exc = record.exc_info[1]
    if is_operational(exc) and not logging.getLogger().isEnabledFor(logging.DEBUG):
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}".splitlines()[0]
    return formatter.formatException(record.exc_info)


class _UtcFormatter(logging.Formatter):
    _second: tuple[int, str] = (0, "")  # the last second formatted (one tuple: atomic)

    def stamp(self, created: float) -> str:
        """2026-12-02T06:10:01.123Z; the part up to the second is formatted once a second."""
        second, text = self._second
        if int(created) != second:
            second = int(created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"


class TextFormatter(_UtcFormatter):
    """TIME LEVEL LOGGER [REQUEST_ID] MESSAGE key=value... (an access line's fields)."""

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        line = (f"{self.stamp(record.created)} {record.levelname} {record.name} "
                f"{f'[{rid}] ' if rid else ''}{record.getMessage()}")
        fields = getattr(record, "access", None)
        if fields:
            line += "".join([f" {k}={v}" for k, v in fields.items()
                             if v is not None and k not in IN_MESSAGE])
        failure = exception_text(self, record)
        if failure:
            line += ("\n" + failure) if "\n" in failure else (" | " + failure)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


class JsonFormatter(_UtcFormatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None)
        if rid:
            out["request_id"] = rid
        fields = getattr(record, "access", None)
        if fields:
            out.update(fields)
        failure = exception_text(self, record)
        if failure:
            out["exception"] = failure
        return orjson.dumps(out, default=str).decode()


def configure_logging(settings, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records to one stderr handler in the configured format. Calling
    it again replaces the handler it installed before (and nothing else)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "minitoolai", False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.minitoolai = True
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    level = LEVELS[settings.log_level]
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        uvicorn_log = logging.getLogger(name)
        uvicorn_log.handlers.clear()
        uvicorn_log.propagate = True
    # no format here prints the thread's or the process's name: do not look them up for
    # every record (a measurable share of the access line's cost)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    access = logging.getLogger("minitoolai.access")
    access.disabled = not settings.access_log
    logging.captureWarnings(True)
    return handler
