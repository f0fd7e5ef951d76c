"""The image job queue's table, declared on the core's metadata (migration:
db/migrations/versions/images_0001_jobs.py, Alembic branch "images")."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Float, Index, Integer, String, Table, Text

from minitoolai.db.tables import metadata

# the states of a job that has not finished, in their order (FINISHED: the last ones)
UNFINISHED = ("submitting", "queued", "processing")
FINISHED = ("success", "error")

image_jobs = Table(
    "image_jobs",
    metadata,
    # public job id: random (not a counter, so ids say nothing about volume), JS-safe size
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("request_id", String(64), nullable=False, unique=True),  # the hold's id
    Column("account_id", Integer, nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("prompt", Text, nullable=False),
    Column("negative_prompt", Text, nullable=False, server_default=""),
    Column("scheduler", String(32), nullable=False),
    Column("steps", Integer, nullable=False),
    Column("cfg_scale", Float, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),  # nanodollars, fixed at submit
    # submitting -> queued -> processing -> success | error (submitting: not yet handed to
    # the workers, see images/queue.py); UNFINISHED below
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_token", String(64), nullable=True),  # one per claim
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),
    Column("image_key", String(255), nullable=True, unique=True),  # storage key of the PNG
    Column("expires_at", DateTime(timezone=True), nullable=True),  # when the file goes
    Index("ix_image_jobs_state_created", "state", "created_at"),
    Index("ix_image_jobs_expires_at", "expires_at"),
)
