"""codes: redemption codes an operator voided (who and when), so they can never be redeemed

Its own branch label after the dashboard's hashed codes (dashboard_0002), so other work on
the dashboard's tables does not collide with it. (Not a `depends_on` of the keys branch: a
database stamped through a dependency does not list dashboard_0002 as a head, and the
readiness check compares heads.)

Revision ID: codes_0001
Revises: dashboard_0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "codes_0001"
down_revision = "dashboard_0002"
branch_labels = ("codes",)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("redemption_codes") as batch:
        # a voided code can no longer be redeemed; who voided it and when stay on the row
        batch.add_column(sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("voided_by", sa.String(320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("redemption_codes") as batch:
        batch.drop_column("voided_by")
        batch.drop_column("voided_at")
