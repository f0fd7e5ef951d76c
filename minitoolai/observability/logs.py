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
import sys
import time
from datetime import UTC, datetime
from typing import IO

import orjson

from minitoolai.observability.exchange import current

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(rid)s%(message)s"
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


class TextFormatter(logging.Formatter):
    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f"[{rid}] " if rid else ""
        line = super().format(record)
        fields = getattr(record, "access", None)
        if fields:
            line += "".join(f" {k}={v}" for k, v in fields.items() if v is not None)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
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
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
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
    access = logging.getLogger("minitoolai.access")
    access.disabled = not settings.access_log
    logging.captureWarnings(True)
    return handler
