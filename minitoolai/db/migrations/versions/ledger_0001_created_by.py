"""ledger: who made each credit entry (created_by) and whether money was received (paid)

Its own branch from the core's second revision, so it never conflicts with other core work.
Existing rows are filled where the reference says who made them: Stripe checkouts (paid),
sign-up credit, redeemed codes (the redeeming account's email).

Revision ID: ledger_0001
Revises: 0002_core
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "ledger_0001"
down_revision = "0002_core"
branch_labels = ("ledger",)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.add_column(sa.Column("created_by", sa.String(320), nullable=True))
        batch.add_column(sa.Column("paid", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.execute("UPDATE ledger_entries SET created_by = 'stripe', paid = TRUE"
               " WHERE request_id LIKE 'stripe:%'")
    op.execute("UPDATE ledger_entries SET created_by = 'sign-up' WHERE request_id LIKE 'signup:%'")
    op.execute("UPDATE ledger_entries SET created_by = (SELECT email FROM accounts"
               " WHERE accounts.id = ledger_entries.account_id)"
               " WHERE kind = 'redeem' AND created_by IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("paid")
        batch.drop_column("created_by")
