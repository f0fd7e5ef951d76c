"""dashboard_auth: one-time password-reset links (the token's SHA-256, expiry, use)

A branch of its own from the core's first revision (db/migrate.py: each capability's
migrations never conflict with another's), so that it and other dashboard revisions can be
written side by side.

Revision ID: dashboard_auth_0001
Revises: 0001_core
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "dashboard_auth_0001"
down_revision = "0001_core"
branch_labels = ("dashboard_auth",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "password_resets",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_password_resets"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_password_resets_account_id_accounts"),
    )
    op.create_index("ix_password_resets_account_id", "password_resets", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_password_resets_account_id", table_name="password_resets")
    op.drop_table("password_resets")
