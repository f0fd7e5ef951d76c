"""Reserve before work, settle after: each one short transaction, never open across I/O.

reserve: raise `held` only where `balance - held` covers the hold (and, for a key, where
the key allows it: not expired, the model on its allowlist, `spent + held` within its
lifetime limit and this month's spending + `held` within its monthly one), and insert the
hold row, together.
settle: delete the hold row (only the first settle finds it, so settling twice charges
once), charge the cost (never more than the hold), release the rest, and write the ledger
entry and the usage record, together. release: settle with a cost of zero.

These run on every request, so they are plain SQL run by the cheapest executor for the
database (db/tx.py): the statements below are the whole of the hot path's SQL. On SQLite
each step is its own statement (a call into the library on the event loop costs a few
microseconds); on PostgreSQL the same steps run as one statement each for reserve and for
settle (RESERVE_PG, SETTLE_PG), because there every statement is a network round trip
taken while the account's row is locked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from minitoolai.clock import as_utc, utcnow
from minitoolai.db.engine import Database
from minitoolai.db.tx import SATx, Tx
from minitoolai.errors import (
    APIError,
    AuthenticationFailed,
    InsufficientCredit,
    LedgerError,
    PermissionDenied,
)
from minitoolai.money import format_usd
from minitoolai.observability import metrics

HOLD_ACCOUNT = ("UPDATE accounts SET held = held + :amount"
                " WHERE id = :account_id AND balance - held >= :amount")

# What a key allows, checked in the same conditional UPDATE that raises its `held` (so no
# two holds can both pass on a stale read): not expired (by the database's clock, :now),
# the model on its allowlist, and its lifetime and this month's spending limits. `{find}`
# is the dialect's substring position (SQLite instr, PostgreSQL strpos); :model is the
# catalog id with the list's separators around it. Which condition refused is worked out
# afterwards from the row (key_refusal), only on the refused path.
KEY_ALLOWS = (
    "(expires_at IS NULL OR expires_at > :now)"
    " AND (models IS NULL OR {find}(models, :model_item) > 0)"
    " AND (spend_limit IS NULL OR spent + held + :amount <= spend_limit)"
    " AND (month_limit IS NULL OR held + :amount + CASE WHEN spent_month = :month"
    " THEN month_spent ELSE 0 END <= month_limit)")
# the hold that first sees a new month (:month, YYYYMM by the database's clock) starts the
# key's month from zero; a settle adds to whatever month the key is in
KEY_HOLD_SET = ("held = held + :amount, month_spent = CASE WHEN spent_month = :month"
                " THEN month_spent ELSE 0 END, spent_month = :month")
HOLD_KEY = (f"UPDATE api_keys SET {KEY_HOLD_SET} WHERE id = :key_id AND "
            + KEY_ALLOWS.format(find="instr"))
INSERT_HOLD = ("INSERT INTO holds (id, account_id, key_id, amount, kind, created_at, expires_at)"
               " VALUES (:id, :account_id, :key_id, :amount, :kind, :now, :expires_at)")
ACCOUNT_CREDIT = "SELECT balance, held FROM accounts WHERE id = :account_id"
KEY_SPENDING = ("SELECT spend_limit, spent, held, expires_at, models, month_limit,"
                " month_spent, spent_month FROM api_keys WHERE id = :key_id")
TAKE_HOLD = "DELETE FROM holds WHERE id = :id RETURNING account_id, key_id, amount"
CHARGE_ACCOUNT = ("UPDATE accounts SET balance = balance - :charge, held = held - :amount"
                  " WHERE id = :account_id")
CHARGE_KEY = ("UPDATE api_keys SET held = held - :amount, spent = spent + :charge,"
              " month_spent = month_spent + :charge, last_used_at = :now WHERE id = :key_id")
INSERT_CHARGE = ("INSERT INTO ledger_entries (account_id, amount, kind, request_id, note,"
                 " created_at) VALUES (:account_id, :amount, 'charge', :id, :note, :now)")
INSERT_USAGE = (
    "INSERT INTO usage (request_id, account_id, key_id, created_at, endpoint, model,"
    " prompt_tokens, completion_tokens, images, characters, cost, status, estimated,"
    " latency_ms) VALUES (:id, :account_id, :key_id, :now, :endpoint, :model,"
    " :prompt_tokens, :completion_tokens, :images, :characters, :cost, :status, :estimated,"
    " :latency_ms)")

# PostgreSQL: the whole reserve in one statement. Each change applies only if the one
# before it did (account, then key, then hold row: the usual lock order); when the key's
# limit refuses after the account's hold applied, the caller raises and the transaction
# is rolled back (every ledger executor rolls back an op that raises).
RESERVE_PG = """
WITH acc AS (UPDATE accounts SET held = held + :amount
             WHERE id = :account_id AND balance - held >= :amount RETURNING id),
k AS (UPDATE api_keys SET """ + KEY_HOLD_SET + """
      WHERE id = :key_id AND EXISTS (SELECT 1 FROM acc)
        AND """ + KEY_ALLOWS.format(find="strpos") + """
      RETURNING id),
h AS (INSERT INTO holds (id, account_id, key_id, amount, kind, created_at, expires_at)
      SELECT :id, :account_id, :key_id, :amount, :kind, :now, :expires_at
      WHERE EXISTS (SELECT 1 FROM acc)
        AND (CAST(:key_id AS VARCHAR) IS NULL OR EXISTS (SELECT 1 FROM k))
      RETURNING id)
SELECT EXISTS (SELECT 1 FROM acc),
       CAST(:key_id AS VARCHAR) IS NULL OR EXISTS (SELECT 1 FROM k)
"""

# PostgreSQL: the whole settlement in one statement, one round trip instead of five (each a
# wait on the event loop while the account's row is locked). The same steps in the same
# order: the hold's DELETE feeds the rest, the account's row is locked before the key's
# (`k` reads `a`), as in every other transaction on them.
SETTLE_PG = """
WITH h AS (DELETE FROM holds WHERE id = :id RETURNING account_id, key_id, amount),
c AS (SELECT account_id, key_id, amount,
             LEAST(GREATEST(CAST(:cost AS BIGINT), 0), amount) AS charge FROM h),
a AS (UPDATE accounts SET balance = balance - c.charge, held = held - c.amount
      FROM c WHERE accounts.id = c.account_id RETURNING accounts.id),
k AS (UPDATE api_keys SET held = held - c.amount, spent = spent + c.charge,
             month_spent = month_spent + c.charge, last_used_at = :now
      FROM c WHERE api_keys.id = c.key_id AND EXISTS (SELECT 1 FROM a)
      RETURNING api_keys.id),
e AS (INSERT INTO ledger_entries (account_id, amount, kind, request_id, note, created_at)
      SELECT account_id, -charge, 'charge', :id, :note, :now FROM c WHERE charge > 0
      RETURNING id),
u AS (INSERT INTO usage (request_id, account_id, key_id, created_at, endpoint, model,
                         prompt_tokens, completion_tokens, images, characters, cost, status,
                         estimated, latency_ms)
      SELECT :id, account_id, key_id, :now, :endpoint, :model, :prompt_tokens,
             :completion_tokens, :images, :characters, charge, :status, :estimated,
             CAST(:latency_ms AS INTEGER)
      FROM c RETURNING id)
SELECT charge, (SELECT count(*) FROM a), (SELECT count(*) FROM u) FROM c
"""


# What `reserve` raises when it refused and wrote nothing (no hold to give back): the
# account's credit (402), or the key's limits (402), expiry (401) or models (403)
REFUSALS = (InsufficientCredit, AuthenticationFailed, PermissionDenied)


def month_of(moment: datetime) -> int:
    """The calendar month (UTC) of `moment` as YYYYMM: the key's monthly limit's period."""
    moment = moment.astimezone(UTC)
    return moment.year * 100 + moment.month


def key_refusal(row, *, amount: int, model: str | None, now: datetime,
                month: int) -> APIError:
    """Why a key refused a hold, from its row (KEY_SPENDING) read in the same transaction
    as the refused UPDATE: the first of its conditions (KEY_ALLOWS) that does not hold."""
    if row is None:
        return AuthenticationFailed("invalid API key", code="invalid_api_key")
    limit, spent, held, expires, models, month_limit, month_spent, spent_month = row
    expires = as_utc(datetime.fromisoformat(expires) if isinstance(expires, str) else expires)
    if expires is not None and expires <= now:
        return AuthenticationFailed(
            f"this API key expired on {expires:%Y-%m-%d %H:%M} UTC; create a new key in the"
            " dashboard", code="expired_api_key")
    if models is not None and (model is None or f",{model}," not in models):
        allowed = ", ".join(m for m in models.split(",") if m) or "none"
        return PermissionDenied(
            f"this API key may not use the model {model!r} (it is restricted to: {allowed})",
            param="model", code="model_not_allowed")
    if limit is not None and spent + held + amount > limit:
        return InsufficientCredit(
            f"this API key's spending limit of ${format_usd(limit)} would be exceeded"
            f" (spent ${format_usd(spent)}, this request needs a hold of"
            f" ${format_usd(amount)})", code="key_spend_limit")
    this_month = month_spent if spent_month == month else 0
    return InsufficientCredit(
        f"this API key's monthly spending limit of ${format_usd(month_limit or 0)} would be"
        f" exceeded (spent ${format_usd(this_month)} this month (UTC), this request needs a"
        f" hold of ${format_usd(amount)}); it resets on the 1st", code="key_monthly_limit")


def account_refusal(balance: int, held: int, amount: int) -> str:
    """The 402's message when the account's available credit does not cover a hold
    (the same words as `reserve`'s, for a hold served from a credit lease)."""
    return (f"insufficient credit: available balance ${format_usd(balance - held)}"
            f" (balance ${format_usd(balance)}, held ${format_usd(held)}), this"
            f" request needs a hold of ${format_usd(amount)}. Top up your credit to"
            " continue.")


def key_limit_refusal(limit: int, spent: int, amount: int) -> str:
    """The 402's message when a key's spending limit does not cover a hold."""
    return (f"this API key's spending limit of ${format_usd(limit)} would be exceeded"
            f" (spent ${format_usd(spent)}, this request needs a hold of"
            f" ${format_usd(amount)})")


@dataclass(slots=True)
class UsageRecord:
    """What one request used; written with its settlement."""

    endpoint: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    characters: int = 0
    status: str = "ok"  # ok | error | cancelled | expired
    estimated: bool = False
    latency_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    request_id: str
    account_id: int
    key_id: str | None
    amount: int


async def reserve(
    db: Database,
    *,
    request_id: str,
    account_id: int,
    key_id: str | None,
    amount: int,
    kind: str,
    ttl_seconds: int,
    model: str | None = None,
) -> Hold:
    """Hold `amount` nanodollars of the account's credit for a request to `model` (the
    catalog id), or raise InsufficientCredit (402); the key's own conditions refuse with
    key_refusal's errors (expired 401, model not allowed 403, its limits 402)."""
    if amount < 0:
        raise ValueError("a hold cannot be negative")
    params = _hold_params(db, request_id=request_id, account_id=account_id, key_id=key_id,
                          amount=amount, kind=kind, ttl_seconds=ttl_seconds, model=model)

    async def hold(tx: Tx) -> tuple[int, int] | None:
        # a refusal is answered, not raised, so that the ops grouped with this one commit
        # as they are (an exception would undo the whole batch on PostgreSQL, see
        # db/pg_ledger.py)
        return await _take_hold(tx, params)

    refusal = await db.run_ledger(hold, order=account_id)
    if refusal is not None:
        raise InsufficientCredit(account_refusal(*refusal, amount))
    return Hold(request_id, account_id, key_id, amount)


async def reserve_many(db: Database, *, request_ids: list[str], account_id: int,
                       key_id: str | None, amounts: list[int], kind: str, ttl_seconds: int,
                       model: str | None = None) -> list[Hold]:
    """The holds of one request that needs several (`n` images, each a job settled on its
    own): all taken in one transaction, or none. A refusal says what they need together,
    and writes nothing: no hold to give back, so no usage row either."""
    if any(amount < 0 for amount in amounts):
        raise ValueError("a hold cannot be negative")
    many = [_hold_params(db, request_id=request_id, account_id=account_id, key_id=key_id,
                         amount=amount, kind=kind, ttl_seconds=ttl_seconds, model=model)
            for request_id, amount in zip(request_ids, amounts, strict=True)]
    total = sum(amounts)

    async def hold_all(tx: Tx) -> str | None:
        taken = 0
        for params in many:
            refusal = await _take_hold(tx, params, taken=taken, need=total)
            if refusal is not None:
                # the account's held, read in this transaction, counts the holds taken
                # before it: they are taken off
                balance, held = refusal
                message = account_refusal(balance, held - taken, total)
                if not taken:
                    # nothing written: answered, not raised, like reserve's (an exception
                    # undoes the whole group-commit batch, db/pg_ledger.py)
                    return message
                raise InsufficientCredit(message)  # rolls back the holds taken before it
            taken += params["amount"]
        return None

    refusal = await db.run_ledger(hold_all, order=account_id)
    if refusal is not None:
        raise InsufficientCredit(refusal)
    return [Hold(request_id, account_id, key_id, amount)
            for request_id, amount in zip(request_ids, amounts, strict=True)]


def _hold_params(db: Database, *, request_id: str, account_id: int, key_id: str | None,
                 amount: int, kind: str, ttl_seconds: int, model: str | None) -> dict:
    # the database's clock decides when the hold expires, whether the key has, and the month
    now = db.now()
    return {"id": request_id, "account_id": account_id, "key_id": key_id,
            "amount": amount, "kind": kind, "now": now,
            "expires_at": now + timedelta(seconds=ttl_seconds), "month": month_of(now),
            "model_item": None if model is None else f",{model},", "model": model}


async def _take_hold(tx: Tx, hold: dict, *, taken: int = 0,
                     need: int | None = None) -> tuple[int, int] | None:
    """Take one hold; None, or (balance, held) of an account whose credit does not cover
    it (nothing was written). A key's refusal raises (key_refusal's errors), which rolls
    the account's hold back with the rest of the op; its message names `need` (the holds
    of the whole request), and not the `taken` ones of it this transaction holds already."""
    now = hold["now"]
    params = {**hold, "now": tx.stamp(now), "expires_at": tx.stamp(hold["expires_at"])}
    if tx.dialect == "postgresql":  # one round trip (see RESERVE_PG)
        account_ok, key_ok = await tx.fetchone(RESERVE_PG, params)
    else:
        account_ok = await tx.execute(HOLD_ACCOUNT, params) == 1
        key_ok = account_ok and (params["key_id"] is None
                                 or await tx.execute(HOLD_KEY, params) == 1)
        if key_ok:
            await tx.execute(INSERT_HOLD, params)
    if not account_ok:
        row = await tx.fetchone(ACCOUNT_CREDIT, params)
        return (row[0], row[1]) if row else (0, 0)
    if not key_ok:
        row = await tx.fetchone(KEY_SPENDING, params)
        if row is not None and taken:
            row = (*row[:2], row[2] - taken, *row[3:])
        raise key_refusal(row, amount=params["amount"] if need is None else need,
                          model=params["model"], now=now, month=params["month"])
    return None


async def settle(db: Database, request_id: str, cost: int, record: UsageRecord, *,
                 account_id: int | None) -> int | None:
    """Charge `cost` (capped at the hold) and release the rest. Returns the amount charged,
    or None when the hold was already settled or swept (nothing is charged twice).
    `account_id` is the hold's account, for the order of locks (GroupCommit.run)."""
    charged = await db.run_ledger(lambda tx: settle_tx(tx, request_id, cost, record),
                                  order=account_id)
    if charged is not None:  # committed: count it (a settle_in's caller counts its own)
        metrics.count_settled(record.endpoint, record.model, charged, record.prompt_tokens,
                              record.completion_tokens)
    return charged


async def settle_in(conn, request_id: str, cost: int, record: UsageRecord) -> int | None:
    """`settle` inside an SQLAlchemy transaction the caller holds (an image job's change
    of state commits with its charge or not at all)."""
    return await settle_tx(SATx(conn), request_id, cost, record)


async def settle_tx(tx: Tx, request_id: str, cost: int, record: UsageRecord) -> int | None:
    if tx.dialect == "postgresql":
        return await _settle_pg(tx, request_id, cost, record)
    hold = await tx.fetchone(TAKE_HOLD, {"id": request_id})
    if hold is None:
        return None
    account_id, key_id, amount = hold[0], hold[1], hold[2]
    charge = max(0, min(cost, amount))
    params = {
        "id": request_id, "account_id": account_id, "key_id": key_id, "amount": amount,
        "charge": charge, "now": tx.stamp(utcnow()), "endpoint": record.endpoint,
        "model": record.model, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens, "images": record.images,
        "characters": record.characters, "cost": charge, "status": record.status,
        "estimated": record.estimated, "latency_ms": record.latency_ms,
    }
    await tx.execute(CHARGE_ACCOUNT, params)
    if key_id is not None:
        await tx.execute(CHARGE_KEY, params)
    if charge:
        await tx.execute(INSERT_CHARGE, {**params, "amount": -charge,
                                         "note": f"{record.endpoint} {record.model}"})
    await tx.execute(INSERT_USAGE, params)
    return charge


async def _settle_pg(tx: Tx, request_id: str, cost: int, record: UsageRecord) -> int | None:
    row = await tx.fetchone(SETTLE_PG, {
        "id": request_id, "cost": cost, "now": tx.stamp(utcnow()),
        "note": f"{record.endpoint} {record.model}", "endpoint": record.endpoint,
        "model": record.model, "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens, "images": record.images,
        "characters": record.characters, "status": record.status,
        "estimated": record.estimated, "latency_ms": record.latency_ms})
    if row is None:
        return None  # already settled or swept
    charge, accounts_charged, usage_written = row
    if accounts_charged != 1 or usage_written != 1:  # cannot happen: the FKs hold
        raise LedgerError(f"settling {request_id} charged {accounts_charged} accounts and"
                          f" wrote {usage_written} usage records")
    return charge


async def release(db: Database, request_id: str, record: UsageRecord, *,
                  account_id: int | None) -> int | None:
    """Give the whole hold back (the work failed); the usage record keeps the failure."""
    return await settle(db, request_id, 0, record, account_id=account_id)
