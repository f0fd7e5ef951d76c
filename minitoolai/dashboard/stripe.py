"""Stripe Checkout top-ups: open a Checkout Session, and credit it from the signed webhook.

No SDK: two HTTP calls' worth of protocol. The webhook's `Stripe-Signature` header is
`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the endpoint secret>`; we
refuse a bad or stale signature. Crediting is idempotent twice over: the checkout row moves
from 'open' to 'paid' by a conditional UPDATE in the same transaction as the credit, and the
ledger reference `stripe:<session id>` is unique.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

import aiohttp
import orjson
from sqlalchemy import insert, select, update

from minitoolai.clock import utcnow
from minitoolai.dashboard.settings import StripeSettings
from minitoolai.dashboard.tables import stripe_checkouts
from minitoolai.db.engine import Database
from minitoolai.errors import InvalidRequest, PermissionDenied, UpstreamError
from minitoolai.ledger.credits import add_credit_in
from minitoolai.money import NANO_PER_USD, display_usd, format_usd, parse_usd

log = logging.getLogger(__name__)
NANO_PER_CENT = NANO_PER_USD // 100
PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@dataclass(frozen=True, slots=True)
class Checkout:
    id: str
    url: str


def amount_in_range(settings: StripeSettings, text: str) -> int:
    """The top-up amount asked for, in nanodollars: whole cents within the configured range."""
    try:
        amount = parse_usd(text)
    except ValueError:
        raise InvalidRequest(f"not an amount: {text!r}", param="amount") from None
    low, high = parse_usd(settings.min_amount), parse_usd(settings.max_amount)
    if amount % NANO_PER_CENT or not low <= amount <= high:
        raise InvalidRequest(f"choose an amount between {display_usd(low)} and"
                             f" {display_usd(high)}, in whole cents", param="amount")
    return amount


async def open_checkout(db: Database, settings: StripeSettings, account_id: int, email: str,
                        amount: int, base_url: str) -> Checkout:
    cents = amount // NANO_PER_CENT
    form = {
        "mode": "payment",
        "success_url": f"{base_url}/?topup=success",
        "cancel_url": f"{base_url}/?topup=cancelled",
        "client_reference_id": str(account_id),
        "customer_email": email,
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": settings.currency,
        "line_items[0][price_data][unit_amount]": str(cents),
        "line_items[0][price_data][product_data][name]": f"MiniToolAI credit ${format_usd(amount)}",
        "metadata[account_id]": str(account_id),
        "metadata[amount_nano]": str(amount),
    }
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    url = settings.api_base.rstrip("/") + "/v1/checkout/sessions"
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http, http.post(
                url, data=form, headers={"Authorization": f"Bearer {settings.secret_key}"}
        ) as response:
            body = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"could not reach Stripe: {exc}") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = {}
    if status != 200 or not data.get("id") or not data.get("url"):
        message = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
        raise UpstreamError(f"Stripe refused the checkout ({status}): {message or 'no detail'}")
    async with db.write() as conn:
        await conn.execute(insert(stripe_checkouts).values(
            id=data["id"], account_id=account_id, amount=amount, amount_cents=cents,
            status="open", created_at=utcnow()))
    return Checkout(data["id"], data["url"])


def verify_signature(settings: StripeSettings, payload: bytes, header: str | None,
                     now: float | None = None) -> None:
    """Raise PermissionDenied unless `header` signs `payload` with the webhook secret,
    recently enough."""
    if not header or not settings.webhook_secret:
        raise PermissionDenied("missing Stripe signature", code="bad_signature")
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    # ASCII digits of a plausible length: "²".isdigit() is true, and int() of thousands of
    # digits raises
    if not timestamp or not (timestamp.isascii() and timestamp.isdigit()) \
            or len(timestamp) > 12 or not signatures:
        raise PermissionDenied("malformed Stripe signature", code="bad_signature")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > settings.signature_tolerance_seconds:
        raise PermissionDenied("Stripe signature too old", code="bad_signature")
    expected = hmac.new(settings.webhook_secret.encode(), timestamp.encode() + b"." + payload,
                        hashlib.sha256).hexdigest()
    # compared as bytes: compare_digest raises on a str with non-ASCII characters
    if not any(hmac.compare_digest(expected.encode(), s.encode()) for s in signatures):
        raise PermissionDenied("Stripe signature does not match", code="bad_signature")


def ledger_reference(session_id: str) -> str:
    # Stripe ids can outgrow the ledger's 64-character reference column: store a digest
    return "stripe:" + hashlib.sha256(session_id.encode("utf-8")).hexdigest()[:48]


async def handle_event(db: Database, event: dict) -> str:
    """Apply one verified event; returns what happened (for the log and the tests)."""
    if event.get("type") not in PAID_EVENTS:
        return "ignored"
    session = (event.get("data") or {}).get("object") or {}
    if session.get("payment_status") not in ("paid", "no_payment_required"):
        return "unpaid"
    session_id = str(session.get("id") or "")
    async with db.write() as conn:
        row = (await conn.execute(select(stripe_checkouts)
                                  .where(stripe_checkouts.c.id == session_id))).first()
        if row is None:
            log.warning("Stripe webhook for unknown checkout session %r", session_id)
            return "unknown"
        total = session.get("amount_total")
        if total is not None and str(total) != str(row.amount_cents):
            log.error("Stripe session %s paid %s cents, expected %s: not credited",
                      session_id, total, row.amount_cents)
            return "mismatch"
        marked = await conn.execute(
            update(stripe_checkouts)
            .where(stripe_checkouts.c.id == session_id, stripe_checkouts.c.status == "open")
            .values(status="paid", paid_at=utcnow()))
        if marked.rowcount != 1:
            return "duplicate"
        await add_credit_in(conn, row.account_id, row.amount, kind="topup",
                            note=f"Stripe checkout {session_id}",
                            reference=ledger_reference(session_id), by="stripe", paid=True)
    return "credited"
