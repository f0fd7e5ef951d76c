"""Configuration of the database connections: the per-process connection budget and the
timeouts that turn a database that is away into a quick 503 instead of a hung request."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DatabaseSettings(BaseModel):
    """`[database]`: what one process (a `serve` process or a `minitoolai worker`) may open.

    Its budget on PostgreSQL is `pool_size + max_overflow + ledger_connections`; see the
    operator guide for the arithmetic over several processes and machines."""

    model_config = ConfigDict(extra="forbid")

    # SQLAlchemy's pool (keys, dashboard, image jobs' reads): kept open, and opened on top
    # under load (closed again when returned)
    pool_size: int = Field(5, ge=1)
    max_overflow: int = Field(5, ge=0)
    # PostgreSQL only: the raw asyncpg pool of the ledger's hot path; one connection is
    # kept for its group commits, the others serve the image queue's short transactions
    ledger_connections: int = Field(5, ge=2)
    # how long a request waits for a free pooled connection before it answers 503
    pool_timeout_seconds: float = Field(5.0, gt=0)
    connect_timeout_seconds: float = Field(5.0, gt=0)
    # PostgreSQL: a statement (over the network) that takes longer is abandoned (503);
    # every statement of this server is short, so this only fires on a stalled database
    statement_timeout_seconds: float = Field(30.0, gt=0)
    # what `Retry-After` tells a client while the database is away
    retry_after_seconds: int = Field(2, ge=1)
    # `GET /health/ready`: how long the database has to answer
    ready_timeout_seconds: float = Field(2.0, gt=0)

    @property
    def budget(self) -> int:
        """The most PostgreSQL connections one process opens."""
        return self.pool_size + self.max_overflow + self.ledger_connections
