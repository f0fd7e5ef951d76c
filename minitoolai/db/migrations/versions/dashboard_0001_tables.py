"""dashboard: login sessions, redemption codes, Stripe checkouts, playground keys, and an
index for the usage page filtered by model

Revision ID: dashboard_0001
Revises: 0001_core
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "dashboard_0001"
down_revision = "0001_core"
branch_labels = ("dashboard",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_dashboard_sessions"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_dashboard_sessions_account_id_accounts"),
    )
    op.create_index("ix_dashboard_sessions_account_id", "dashboard_sessions", ["account_id"])
    op.create_table(
        "redemption_codes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("batch", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer, nullable=True),
        sa.Column("used_by", sa.Integer, nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_redemption_codes"),
        sa.UniqueConstraint("code", name="uq_redemption_codes_code"),
        sa.ForeignKeyConstraint(["created_by"], ["accounts.id"],
                                name="fk_redemption_codes_created_by_accounts"),
        sa.ForeignKeyConstraint(["used_by"], ["accounts.id"],
                                name="fk_redemption_codes_used_by_accounts"),
    )
    op.create_table(
        "stripe_checkouts",
        sa.Column("id", sa.String(255), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("amount_cents", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stripe_checkouts"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_stripe_checkouts_account_id_accounts"),
    )
    op.create_index("ix_stripe_checkouts_account_id", "stripe_checkouts", ["account_id"])
    op.create_index("ix_usage_account_model_id", "usage", ["account_id", "model", "id"])
    op.create_table(
        "dashboard_playground_keys",
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name="pk_dashboard_playground_keys"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_dashboard_playground_keys_account_id_accounts"),
    )


def downgrade() -> None:
    op.drop_table("dashboard_playground_keys")
    op.drop_index("ix_usage_account_model_id", table_name="usage")
    op.drop_index("ix_stripe_checkouts_account_id", table_name="stripe_checkouts")
    op.drop_table("stripe_checkouts")
    op.drop_table("redemption_codes")
    op.drop_index("ix_dashboard_sessions_account_id", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
