"""keys: expiry, monthly spending limits and model allowlists on API keys

Its own branch from the core's second revision, so it never conflicts with other core work
(voided codes are codes_0001, on the dashboard's line). A key's spending this month is
filled from its usage rows of the current UTC month, so a monthly limit set right after the
upgrade counts what the key already spent.

Revision ID: keys_0001
Revises: 0002_core
Create Date: 2026-12-02
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "keys_0001"
down_revision = "0002_core"
branch_labels = ("keys",)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("month_limit", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("month_spent", sa.BigInteger(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("spent_month", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("models", sa.Text(), nullable=True))
    # the usage page filtered by key, within one account (dashboard/tables.py)
    op.create_index("ix_usage_account_key_id", "usage", ["account_id", "key_id", "id"])
    now = datetime.now(UTC)
    start = datetime(now.year, now.month, 1, tzinfo=UTC)
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":  # stored as SQLAlchemy's SQLite dialect writes it
        start = start.replace(tzinfo=None).isoformat(" ", "microseconds")
    conn.execute(sa.text(
        "UPDATE api_keys SET spent_month = :month, month_spent = COALESCE((SELECT SUM(cost)"
        " FROM usage WHERE usage.key_id = api_keys.id AND usage.created_at >= :start), 0)"),
        {"month": now.year * 100 + now.month, "start": start})


def downgrade() -> None:
    op.drop_index("ix_usage_account_key_id", table_name="usage")
    with op.batch_alter_table("api_keys") as batch:
        for name in ("models", "spent_month", "month_spent", "month_limit", "expires_at"):
            batch.drop_column(name)
