"""secrets: the server's shared secrets (the key that signs image tickets and file URLs)

Kept in the database so that every server on it signs and checks with the same key: a
ticket issued by one machine is honoured by all of them.

Revision ID: secrets_0001
Revises: 0001_core
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "secrets_0001"
down_revision = "0001_core"
branch_labels = ("secrets",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_secrets"),
    )


def downgrade() -> None:
    op.drop_table("server_secrets")
