"""Stripe Checkout top-ups against a fake Stripe on loopback: the checkout is opened with the
right amount, the webhook refuses bad and stale signatures, credits a paid session once even
when the event is replayed, and ignores what it does not know."""

from __future__ import annotations

import requests
from sqlalchemy import select

from minitoolai.accounts.store import get_account
from minitoolai.app import create_app
from minitoolai.dashboard.tables import stripe_checkouts
from minitoolai.db.engine import Database
from minitoolai.db.tables import ledger_entries
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token, visible
from tests.servers import ThreadedServer

WEBHOOK = "/billing/stripe/webhook"


async def _state(database_url: str, account_id: int):
    db = Database(database_url, pool_size=1)
    try:
        account = await get_account(db, account_id)
        async with db.read() as conn:
            checkouts = (await conn.execute(select(stripe_checkouts))).all()
            topups = (await conn.execute(select(ledger_entries).where(
                ledger_entries.c.account_id == account_id,
                ledger_entries.c.kind == "topup"))).all()
    finally:
        await db.dispose()
    return account, checkouts, topups


def _deliver(base: str, payload: bytes, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return requests.post(base + WEBHOOK, data=payload, headers=headers)


async def test_checkout_and_webhook(live, database_url, fake_stripe):
    account_id, email = await make_user(database_url)
    http = login(live.url, email)
    token = page_token(http, live.url + "/")
    assert "Top up by card" in http.get(live.url + "/").text
    response = http.post(live.url + "/topup/checkout",
                         data={"csrf_token": token, "amount": "12.34"}, allow_redirects=False)
    assert response.status_code == 303
    pay_url = response.headers["location"]
    assert pay_url.startswith(fake_stripe.base_url + "/pay/cs_test_")
    session_id = pay_url.rsplit("/", 1)[1]
    sent = fake_stripe.requests[-1]
    assert sent["authorization"] == f"Bearer {fake_stripe.secret_key}"
    form = sent["form"]
    assert form["line_items[0][price_data][unit_amount]"] == "1234"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["client_reference_id"] == str(account_id)
    assert form["success_url"] == live.url + "/?topup=success"
    account, checkouts, _ = await _state(database_url, account_id)
    assert [(c.id, c.amount, c.amount_cents, c.status) for c in checkouts] == \
        [(session_id, 12_340_000_000, 1234, "open")]
    assert account.balance == 0

    payload = fake_stripe.completed_event(session_id, 1234, event_id="evt_1")
    # refused: no signature, a wrong secret, a tampered body, a stale timestamp
    assert _deliver(live.url, payload, None).status_code == 403
    assert _deliver(live.url, payload,
                    fake_stripe.signature(payload, secret="whsec_wrong")).status_code == 403
    tampered = payload.replace(b"1234", b"9999")
    assert _deliver(live.url, tampered, fake_stripe.signature(payload)).status_code == 403
    stale = fake_stripe.signature(payload, timestamp=1_000_000_000)
    assert _deliver(live.url, payload, stale).status_code == 403
    assert _deliver(live.url, payload, "t=abc,v1=").status_code == 403
    account, _, topups = await _state(database_url, account_id)
    assert account.balance == 0 and topups == []

    # a good delivery credits; the replay (same event, or another event for the same
    # session) answers 200 and credits nothing more
    first = _deliver(live.url, payload, fake_stripe.signature(payload))
    assert first.status_code == 200 and first.json()["outcome"] == "credited"
    replay = _deliver(live.url, payload, fake_stripe.signature(payload))
    assert replay.status_code == 200 and replay.json()["outcome"] == "duplicate"
    other = fake_stripe.completed_event(session_id, 1234, event_id="evt_2")
    assert _deliver(live.url, other, fake_stripe.signature(other)).json()["outcome"] == \
        "duplicate"
    account, checkouts, topups = await _state(database_url, account_id)
    assert account.balance == 12_340_000_000
    assert len(topups) == 1 and topups[0].amount == 12_340_000_000
    assert checkouts[0].status == "paid"
    assert "$12.34" in visible(http.get(live.url + "/").text)

    # events it does not act on
    unknown = fake_stripe.completed_event("cs_test_unknown", 100)
    assert _deliver(live.url, unknown, fake_stripe.signature(unknown)).json()["outcome"] == \
        "unknown"
    mismatch_checkout = http.post(live.url + "/topup/checkout",
                                  data={"csrf_token": token, "amount": "5"},
                                  allow_redirects=False).headers["location"].rsplit("/", 1)[1]
    wrong_amount = fake_stripe.completed_event(mismatch_checkout, 1)
    assert _deliver(live.url, wrong_amount,
                    fake_stripe.signature(wrong_amount)).json()["outcome"] == "mismatch"
    other_type = b'{"id": "evt_3", "type": "customer.created", "data": {"object": {}}}'
    assert _deliver(live.url, other_type,
                    fake_stripe.signature(other_type)).json()["outcome"] == "ignored"
    not_json = b"not json"
    assert _deliver(live.url, not_json, fake_stripe.signature(not_json)).status_code == 400
    account, _, _ = await _state(database_url, account_id)
    assert account.balance == 12_340_000_000
    await assert_ledger_ok(database_url)


async def test_checkout_amount_limits(live, database_url, fake_stripe):
    _, email = await make_user(database_url)
    http = login(live.url, email)
    token = page_token(http, live.url + "/")
    before = len(fake_stripe.requests)
    for amount in ("0.5", "5000", "1.234", "abc", ""):
        response = http.post(live.url + "/topup/checkout",
                             data={"csrf_token": token, "amount": amount}, allow_redirects=False)
        assert response.status_code == 400, amount
        # the overview again, the error beside the amount field
        assert "Choose an amount between $1.00 and $1,000.00" in response.text or \
            "Not an amount" in response.text
        assert 'aria-describedby="field-amount-error"' in response.text
    assert len(fake_stripe.requests) == before  # nothing was sent to Stripe


async def test_stripe_off_without_keys(dash_settings, database_url):
    _, email = await make_user(database_url)
    settings = dash_settings(dashboard={"stripe": {"secret_key": None}})
    with ThreadedServer(create_app(settings)) as live:
        http = login(live.url, email)
        assert "Top up by card" not in http.get(live.url + "/").text
        token = page_token(http, live.url + "/")
        response = http.post(live.url + "/topup/checkout",
                             data={"csrf_token": token, "amount": "10"})
        assert response.status_code == 404
        assert requests.post(live.url + WEBHOOK, data=b"{}").status_code == 404


async def test_stripe_refusing_the_checkout_is_a_502(dash_settings, database_url, fake_stripe):
    account_id, email = await make_user(database_url)
    settings = dash_settings(dashboard={"stripe": {"secret_key": "sk_test_wrong"}})
    with ThreadedServer(create_app(settings)) as live:
        http = login(live.url, email)
        token = page_token(http, live.url + "/")
        response = http.post(live.url + "/topup/checkout",
                             data={"csrf_token": token, "amount": "10"})
        assert response.status_code == 502 and "Invalid API Key" in response.text
    _, checkouts, _ = await _state(database_url, account_id)
    assert checkouts == []
