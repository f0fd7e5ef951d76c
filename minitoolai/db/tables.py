"""The tables of the core (accounts, keys, ledger, holds, usage).

Capabilities that need their own tables (image jobs, dashboard sessions, redemption codes)
declare them on the same `metadata` in their own `tables.py` module and ship an Alembic
migration on their own branch (see db/migrations/versions/). Money columns are BigInteger
nanodollars.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, server_default=""),
    # balance = sum of this account's ledger entries; held = sum of its open holds
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    Column("password_hash", String(255), nullable=True),  # argon2, dashboard login
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),  # public id, e.g. key_3f9a...
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False, server_default=""),
    Column("prefix", String(32), nullable=False),  # first characters, to recognise a key
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # optional per-key spending limit, enforced at reserve time like the balance
    Column("spend_limit", BigInteger, nullable=True),
    Column("spent", BigInteger, nullable=False, server_default="0"),
    Column("held", BigInteger, nullable=False, server_default="0"),
    # the key stops working after this instant (the database's clock): 401 expired_api_key
    Column("expires_at", DateTime(timezone=True), nullable=True),
    # optional limit per calendar month (UTC). month_spent is what was charged while
    # spent_month (YYYYMM) was the key's month; the hold that first sees a new month starts
    # it again from zero, so the check stays one conditional UPDATE (ledger/holds.py)
    Column("month_limit", BigInteger, nullable=True),
    Column("month_spent", BigInteger, nullable=False, server_default="0"),
    Column("spent_month", Integer, nullable=False, server_default="0"),
    # the models this key may use, as ",id1,id2," (a substring test in SQL needs no join);
    # NULL: every model
    Column("models", Text, nullable=True),
)

holds = Table(
    "holds",
    metadata,
    Column("id", String(64), primary_key=True),  # the request id
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),  # chat | image | speech
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # no secondary index: only requests in flight are here, and each index would be one more
    # page written per reserve and per settle (see migration 0002_core)
    sqlite_with_rowid=False,
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("amount", BigInteger, nullable=False),  # + credit, - charge
    Column("kind", String(16), nullable=False),  # topup | charge | adjustment | redeem | refund
    # a charge's request id: unique, so one request can never be charged twice
    Column("request_id", String(64), nullable=True, unique=True),
    Column("note", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # who made a credit entry: "cli:<os user>", an admin's email, "stripe", the redeeming
    # customer's email, "sign-up", "system"; NULL for charges (the request id says whose)
    Column("created_by", String(320), nullable=True),
    # money was received for this credit (Stripe, an operator top-up marked --paid): the
    # platform's revenue, apart from free credit (demo, sign-up, codes, gifts)
    Column("paid", Boolean, nullable=False, server_default=false()),
)

usage = Table(
    "usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False, unique=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("prompt_tokens", Integer, nullable=False, server_default="0"),
    Column("completion_tokens", Integer, nullable=False, server_default="0"),
    Column("images", Integer, nullable=False, server_default="0"),
    Column("characters", Integer, nullable=False, server_default="0"),
    Column("cost", BigInteger, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),  # ok | error | cancelled
    Column("estimated", Boolean, nullable=False, server_default=false()),
    Column("latency_ms", Integer, nullable=True),
    Index("ix_usage_account_created", "account_id", "created_at"),
)

# Credit leases (ledger/leases.py): a slice of an account's credit (and of
# its key's spending limit) granted to one server process, which serves holds from it
# without touching the account's row. `amount` is counted in accounts.held and
# api_keys.held; `charged` is what was settled against it and not yet folded into
# accounts.balance / api_keys.spent (it is in the ledger entries and usage rows already).
credit_leases = Table(
    "credit_leases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("key_id", String(32), nullable=True),
    Column("owner", String(128), nullable=False),  # host-pid, for operators reading it
    Column("amount", BigInteger, nullable=False),
    Column("charged", BigInteger, nullable=False, server_default="0"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    # whatever would overdraw a lease fails (ledger/lease_settlements.py)
    CheckConstraint("charged <= amount", name="charged_within_amount"),
    # no secondary index: a few rows per server process, scanned by the sweeper and verify
)
