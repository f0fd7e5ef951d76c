"""Which errors of the database drivers mean "the database is away (or full) right now".

Those become DatabaseUnavailable (503 with Retry-After) at the one boundary every query
crosses (db/engine.py's Database) and, as a safety net, in the app's error handlers: a
client is told to retry instead of getting a 500, and nothing has been served. Errors
that are the query's own (a constraint, a syntax error) stay what they are.

The drivers disagree on how they say it, so each error and its causes are looked at:
SQLAlchemy wraps the driver's error (`.orig`), its asyncpg adapter chains the original
(`__cause__`) and copies its SQLSTATE; asyncpg raises its own classes, or a bare OSError
or TimeoutError while connecting; sqlite3 says "database is locked".
"""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa_exc

from minitoolai.errors import DatabaseUnavailable

# SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
# connections), 57 operator intervention (pg_terminate_backend, shutdown, statement
# timeout, "the database system is starting up")
_UNAVAILABLE_SQLSTATE = ("08", "53", "57")
_BUSY_SQLSTATE = "53"
_SQLITE_TRANSIENT = ("locked", "busy", "unable to open", "disk i/o")
_ASYNCPG_LOST = (asyncpg.PostgresConnectionError, asyncpg.exceptions.AdminShutdownError,
                 asyncpg.exceptions.CrashShutdownError,
                 asyncpg.exceptions.CannotConnectNowError,
                 # the server's "terminating connection" arriving while asyncpg is between
                 # two states: "cannot switch to state 11; another operation is in progress"
                 asyncpg.exceptions.InternalClientError)


def _chain(exc: BaseException):
    """The error, what it wraps, and what caused it (bounded: chains can loop)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo.extend((getattr(item, "orig", None), item.__cause__, item.__context__))
    return seen


def _client_side(exc: BaseException) -> bool:
    # asyncpg's own complaints about the connection ("connection is closed", "pool is
    # closing"); its DataError (a bad query argument) is one too, but the query's fault
    return (isinstance(exc, asyncpg.InterfaceError)
            and not isinstance(exc, asyncpg.exceptions.DataError))


def _kind(exc: BaseException, raw_io: bool) -> str | None:
    """"busy", "unavailable", or None (not a fault of the database being away)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc.code or "unavailable"
    if isinstance(exc, sa_exc.TimeoutError):  # QueuePool limit reached, timed out
        return "busy"
    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc).lower()
        return "unavailable" if any(w in text for w in _SQLITE_TRANSIENT) else None
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "unavailable"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE):
        return "busy" if sqlstate.startswith(_BUSY_SQLSTATE) else "unavailable"
    if isinstance(exc, _ASYNCPG_LOST) or _client_side(exc):
        return "unavailable"
    if raw_io and isinstance(exc, OSError | TimeoutError):
        # refused, reset, unreachable, or a connect/statement timeout: only trusted where
        # the error surely came from a database driver (raw_io), never app-wide
        return "unavailable"
    return None


def fault_kind(exc: BaseException, *, raw_io: bool = False) -> str | None:
    for item in _chain(exc):
        kind = _kind(item, raw_io)
        if kind is not None:
            return kind
    return None


def as_unavailable(exc: BaseException, *, retry_after: int = 2,
                   raw_io: bool = False) -> DatabaseUnavailable | None:
    """The 503 to answer for this error, or None when it is not the database being away.
    `raw_io`: the error came out of a database call, so a bare OSError or TimeoutError is
    the connection's."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    kind = fault_kind(exc, raw_io=raw_io)
    if kind is None:
        return None
    if kind == "busy" or kind == "database_busy":
        return DatabaseUnavailable(
            "every database connection of this server is busy; retry shortly",
            retry_after=retry_after, code="database_busy")
    return DatabaseUnavailable(
        "the database is unavailable; retry shortly", retry_after=retry_after)


def connection_lost(exc: BaseException) -> bool:
    """Whether the connection itself is gone (dropped, terminated, refused), so that the
    same work on a fresh connection may succeed. A timeout is not: the database may be
    stalled, and trying again would double the wait."""
    for item in _chain(exc):
        if isinstance(item, (*_ASYNCPG_LOST, ConnectionError)) or _client_side(item):
            return True
        sqlstate = getattr(item, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P")):
            return True
        if isinstance(item, OSError) and not isinstance(item, TimeoutError):
            return True
    return False
