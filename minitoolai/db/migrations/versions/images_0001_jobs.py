"""images: the image job queue

Revision ID: images_0001_jobs
Revises: 0001_core
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "images_0001_jobs"
down_revision = "0001_core"
branch_labels = ("images",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "image_jobs",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("negative_prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("scheduler", sa.String(32), nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("cfg_scale", sa.Float, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("price", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_token", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("image_key", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_image_jobs"),
        sa.UniqueConstraint("request_id", name="uq_image_jobs_request_id"),
        sa.UniqueConstraint("image_key", name="uq_image_jobs_image_key"),
    )
    op.create_index("ix_image_jobs_state_created", "image_jobs", ["state", "created_at"])
    op.create_index("ix_image_jobs_expires_at", "image_jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_image_jobs_expires_at", table_name="image_jobs")
    op.drop_index("ix_image_jobs_state_created", table_name="image_jobs")
    op.drop_table("image_jobs")
