"""The dashboard's tables: login sessions, redemption codes, Stripe checkouts, playground keys.

Declared on the core's `metadata`; created by the migration on the `dashboard` Alembic branch
(db/migrations/versions/dashboard_0001_tables.py), which must be kept in step with this file.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Index, Integer, String, Table

from minitoolai.db.tables import metadata, usage

# A session id is a 256-bit random cookie value; only its SHA-256 is stored, so a leaked
# database (or backup) cannot be replayed as logins.
dashboard_sessions = Table(
    "dashboard_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_dashboard_sessions_account_id", "account_id"),
)

# Single-use top-up codes made by the operator. `code` is the canonical form (upper case,
# no separators); used_by/used_at are set exactly once, by a conditional UPDATE.
redemption_codes = Table(
    "redemption_codes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code", String(64), nullable=False, unique=True),  # SHA-256 of the code
    Column("hint", String(8), nullable=False, server_default=""),  # its last 4 characters
    Column("amount", BigInteger, nullable=False),  # nanodollars
    Column("batch", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("used_by", Integer, ForeignKey("accounts.id"), nullable=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
    # voided by an operator before anyone redeemed it (migration codes_0001): who and when
    Column("voided_at", DateTime(timezone=True), nullable=True),
    Column("voided_by", String(320), nullable=True),
)

# Stripe Checkout sessions we opened: the webhook credits only sessions found here, with the
# amount recorded here, once (status moves to 'paid' in the same transaction as the credit).
stripe_checkouts = Table(
    "stripe_checkouts",
    metadata,
    Column("id", String(255), primary_key=True),  # Stripe's cs_... id
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),  # nanodollars credited when paid
    Column("amount_cents", Integer, nullable=False),  # what Stripe charges
    Column("status", String(16), nullable=False),  # open | paid
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("paid_at", DateTime(timezone=True), nullable=True),
    Index("ix_stripe_checkouts_account_id", "account_id"),
)

# The API key the playground charges its calls to, one per account (its secret is never
# needed: the playground calls the services in-process with the key's Principal).
playground_keys = Table(
    "dashboard_playground_keys",
    metadata,
    Column("account_id", Integer, ForeignKey("accounts.id"), primary_key=True),
    Column("key_id", String(32), nullable=False),
)

# The usage page filtered by model reads newest-first within one account and one model; the
# core's (account_id, created_at) index leaves that to a scan of all the account's rows.
Index("ix_usage_account_model_id", usage.c.account_id, usage.c.model, usage.c.id)

# The usage page filtered by key (migration keys_0001), likewise within one account.
Index("ix_usage_account_key_id", usage.c.account_id, usage.c.key_id, usage.c.id)

# One-time password-reset links: only the SHA-256 of the link's token is stored; a row works
# once (used_at is set by a conditional UPDATE), until expires_at on the database's clock,
# and is deleted when the account's password changes. Created by the migration on the
# `dashboard_auth` branch (dashboard_auth_0001_password_resets.py).
password_resets = Table(
    "password_resets",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Index("ix_password_resets_account_id", "account_id"),
)
