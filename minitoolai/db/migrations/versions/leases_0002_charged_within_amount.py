"""leases: the database refuses a lease charged past its amount

A CHECK constraint, `charged <= amount`, instead of a condition in each settling UPDATE
that the code then had to test: a batch of settlements that would overdraw a lease now
fails as a statement, so it can run as one statement alone, without an explicit
transaction around it (ledger/lease_settlements.py), and nothing can ever leave a lease
overdrawn. SQLite cannot add a constraint to a table: Alembic's batch mode copies it.

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
        batch.create_check_constraint("ck_credit_leases_charged_within_amount", "charged <= amount")


def downgrade() -> None:
    with op.batch_alter_table("credit_leases") as batch:
        batch.drop_constraint("ck_credit_leases_charged_within_amount", type_="check")
