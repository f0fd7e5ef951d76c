"""leases: the database refuses a lease charged past its amount

A CHECK constraint, `charged <= amount`: whatever statement would overdraw a lease fails,
so nothing can ever leave one overdrawn. The batch of leased settlements, which runs as one
statement without an explicit transaction around it (ledger/lease_settlements.py), also
fails itself; this is the second line. SQLite cannot add a constraint to a table: Alembic's
batch mode copies it (a few rows per server process).

Revision ID: leases_0002
Revises: leases_0001
Create Date: 2026-12-02
"""

from alembic import op

revision = "leases_0002"
down_revision = "leases_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("credit_leases") as batch:
        batch.create_check_constraint("ck_credit_leases_charged_within_amount",
                                      "charged <= amount")


def downgrade() -> None:
    with op.batch_alter_table("credit_leases") as batch:
        batch.drop_constraint("ck_credit_leases_charged_within_amount", type_="check")
