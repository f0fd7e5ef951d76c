"""The idempotency keys' table, declared on the core's metadata (migration:
db/migrations/versions/idempotency_0001_keys.py, Alembic branch "idempotency")."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Integer, LargeBinary, String, Table, Text

from minitoolai.db.tables import metadata

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", Integer, primary_key=True, autoincrement=False),
    Column("key", String(255), primary_key=True),
    # sha256 of the endpoint and the canonical JSON body: the same key with another body is 422
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # running | done | too_large
    Column("status_code", Integer, nullable=True),
    Column("headers", Text, nullable=True),  # JSON: the first response's headers to replay
    Column("body", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)
