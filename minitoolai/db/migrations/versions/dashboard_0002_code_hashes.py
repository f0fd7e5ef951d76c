"""dashboard: redemption codes stored as SHA-256 hashes, with a 4-character hint

Revision ID: dashboard_0002
Revises: dashboard_0001
Create Date: 2026-11-22
"""

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "dashboard_0002"
down_revision = "dashboard_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("redemption_codes") as batch:
        batch.add_column(sa.Column("hint", sa.String(8), nullable=False, server_default=""))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, code FROM redemption_codes")).all()
    for row in rows:  # codes made before this revision were stored in clear
        conn.execute(sa.text("UPDATE redemption_codes SET code = :h, hint = :hint WHERE id = :id"),
                     {"h": hashlib.sha256(row.code.encode()).hexdigest(), "hint": row.code[-4:],
                      "id": row.id})


def downgrade() -> None:
    with op.batch_alter_table("redemption_codes") as batch:
        batch.drop_column("hint")
