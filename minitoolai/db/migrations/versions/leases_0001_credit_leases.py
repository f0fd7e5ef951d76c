"""leases: credit leases, slices of an account's credit granted to one server process

Its own branch from the core's second revision (see ledger/leases.py for the design). The
table only ever holds a few rows per running server process, so it has no secondary index.

Revision ID: leases_0001
Revises: 0002_core
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "leases_0001"
down_revision = "0002_core"
branch_labels = ("leases",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_leases",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("charged", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credit_leases"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"],
                                name="fk_credit_leases_account_id_accounts"),
    )


def downgrade() -> None:
    op.drop_table("credit_leases")
