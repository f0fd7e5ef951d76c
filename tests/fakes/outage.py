"""A database outage a test can start and end, on the test's own database only.

SQLite: another connection takes the write lock (BEGIN IMMEDIATE) and keeps it; the
server's writes wait out their busy timeout and fail ("database is locked"), reads go on.
PostgreSQL: the server reaches the database through a TcpProxy of the test's own, which
is cut (every connection reset, new ones refused) and restored.

Use `url` as the server's database URL; the test itself reads and verifies through the
database's own URL, which the outage does not touch.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.engine import make_url

from tests.fakes.tcp_proxy import TcpProxy


class DatabaseOutage:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        parsed = make_url(database_url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._path = parsed.database if self.is_sqlite else None
        self._proxy = None if self.is_sqlite else TcpProxy(parsed.host, parsed.port or 5432)
        self._lock: sqlite3.Connection | None = None
        self.url = database_url if self.is_sqlite else parsed.set(
            port=self._proxy.port).render_as_string(hide_password=False)

    def __enter__(self) -> DatabaseOutage:
        if self._proxy is not None:
            self._proxy.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.end()
        if self._proxy is not None:
            self._proxy.__exit__(*exc)

    def begin(self) -> None:
        if self.is_sqlite:
            self._lock = sqlite3.connect(self._path, isolation_level=None, timeout=30)
            self._lock.execute("BEGIN IMMEDIATE")
        else:
            self._proxy.cut()

    def end(self) -> None:
        if self.is_sqlite:
            if self._lock is not None:
                self._lock.execute("ROLLBACK")
                self._lock.close()
                self._lock = None
        else:
            self._proxy.restore()
