"""The operator's credit history: a top-up made on the command line (marked paid), a redeemed
code, a Stripe payment through the fake Stripe and a signed adjustment made on the admin page
are listed on the account's admin page and in its CSV with their notes and who made them; the
platform page counts paid revenue apart from free credit; `ledger entries` agrees; and the
customer's own /credits page and CSV list the same entries by source, to that customer only."""

from __future__ import annotations

import csv
import io
import json
import re

import requests
from typer.testing import CliRunner

from minitoolai.cli.main import app as cli_app
from minitoolai.dashboard.codes import create_codes, display
from minitoolai.db.engine import Database
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import arun, login, make_user, page_token, visible

WEBHOOK = "/billing/stripe/webhook"


async def _make_code(database_url: str, amount: int) -> str:
    db = Database(database_url, pool_size=1)
    try:
        return (await create_codes(db, amount, 1, batch="fair"))[0]
    finally:
        await db.dispose()


def _history_rows(html: str) -> list[tuple[str, ...]]:
    """The cells of each row of the credit history table, but its date."""
    section = html.split('id="credit-history"', 1)[1].split("</section>", 1)[0]
    rows = []
    for row in re.findall(r"<tr data-entry-id=\"\d+\">(.*?)</tr>", section, re.DOTALL):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>",
                                                                       row, re.DOTALL)]
        rows.append(tuple(cells[1:]))
    return rows


def test_admin_page_lists_every_kind_of_credit_with_notes(live, database_url, fake_stripe,
                                                          tmp_path):
    base = live.url
    _, admin = arun(make_user(database_url, admin=True))
    customer_id, customer = arun(make_user(database_url, email="dora@example.com"))

    # 1. a top-up on the command line, marked paid
    runner = CliRunner()
    env = {"MINITOOLAI_DATABASE_URL": database_url, "MINITOOLAI_DATA_DIR": str(tmp_path / "d"),
           "OPENAI_API_KEY": ""}
    done = runner.invoke(cli_app, ["credits", "add", customer, "20", "--note", "invoice 7",
                                   "--paid"], env=env)
    assert done.exit_code == 0, done.output

    # 2. a redeemed code, by the customer in the dashboard
    code = arun(_make_code(database_url, 3_000_000_000))
    http = login(base, customer)
    token = page_token(http, base + "/")
    redeemed = http.post(base + "/redeem", data={"csrf_token": token, "code": display(code)},
                         allow_redirects=False)
    assert redeemed.status_code == 303

    # 3. a Stripe payment
    checkout = http.post(base + "/topup/checkout", data={"csrf_token": token, "amount": "12.34"},
                         allow_redirects=False)
    session_id = checkout.headers["location"].rsplit("/", 1)[1]
    payload = fake_stripe.completed_event(session_id, 1234, event_id="evt_hist")
    paid = requests.post(base + WEBHOOK, data=payload, headers={
        "Content-Type": "application/json", "Stripe-Signature": fake_stripe.signature(payload)})
    assert paid.json()["outcome"] == "credited"

    # 4. a signed adjustment by the operator, with its reason
    ops = login(base, admin)
    page_url = f"{base}/admin/accounts/{customer_id}"
    adjusted = ops.post(page_url + "/credit", data={"csrf_token": page_token(ops, page_url),
                                                    "amount": "-1.5", "reason": "refund #9"},
                        allow_redirects=False)
    assert adjusted.status_code == 303

    page = ops.get(page_url)
    assert page.status_code == 200
    assert _history_rows(page.text) == [
        ("adjustment", "-$1.50", "", admin, "refund #9"),
        ("topup", "+$12.34", "paid", "stripe", f"Stripe checkout {session_id}"),
        ("redeem", "+$3.00", "", customer, f"code …-{code[-4:]}"),
        ("topup", "+$20.00", "paid", "cli:" + _os_user(), "invoice 7"),
    ]

    export = ops.get(page_url + "/ledger.csv")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [(r["kind"], r["amount_usd"], r["amount_nano"], r["paid"], r["created_by"], r["note"])
            for r in rows] == [
        ("adjustment", "-1.50", "-1500000000", "no", admin, "refund #9"),
        ("topup", "12.34", "12340000000", "yes", "stripe", f"Stripe checkout {session_id}"),
        ("redeem", "3.00", "3000000000", "no", customer, f"code …-{code[-4:]}"),
        ("topup", "20.00", "20000000000", "yes", "cli:" + _os_user(), "invoice 7"),
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time_utc"]) for r in rows)
    # a customer cannot read it
    assert http.get(page_url + "/ledger.csv").status_code == 403

    # the platform page: revenue is what was paid; the code is free credit
    overview = ops.get(base + "/admin").text
    money = overview.split('id="money-in"', 1)[1].split("</section>", 1)[0]
    values = [visible(b) for b in re.findall(r"<b[^>]*>(.*?)</b>", money)]
    assert values == ["$32.34", "$3.00", "-$1.50"]

    # the command line shows the same history, with the same notes and authors
    listed = json.loads(runner.invoke(cli_app, ["ledger", "entries", customer, "--json"],
                                      env=env).stdout)
    assert [(e["kind"], e["amount_nano"], e["paid"], e["created_by"], e["note"])
            for e in listed["entries"]] == [
        ("adjustment", -1_500_000_000, False, admin, "refund #9"),
        ("topup", 12_340_000_000, True, "stripe", f"Stripe checkout {session_id}"),
        ("redeem", 3_000_000_000, False, customer, f"code …-{code[-4:]}"),
        ("topup", 20_000_000_000, True, "cli:" + _os_user(), "invoice 7"),
    ]
    assert listed["balance_nano"] == 33_840_000_000

    # the customer's own history: linked from the overview, the same entries and notes, told
    # by source (not by the operator's email), and as CSV
    assert 'href="/credits"' in http.get(base + "/").text
    mine = http.get(base + "/credits")
    assert mine.status_code == 200 and admin not in mine.text
    assert _history_rows(mine.text) == [
        ("adjustment", "-$1.50", "refund #9"),
        ("card payment", "+$12.34", f"Stripe checkout {session_id}"),
        ("redeemed code", "+$3.00", f"code …-{code[-4:]}"),
        ("top-up", "+$20.00", "invoice 7"),
    ]
    mine_csv = list(csv.reader(io.StringIO(http.get(base + "/credits.csv").text)))
    assert mine_csv[0] == ["time_utc", "source", "amount_usd", "note"]
    assert [row[1:] for row in mine_csv[1:]] == [
        ["adjustment", "-1.50", "refund #9"],
        ["card payment", "12.34", f"Stripe checkout {session_id}"],
        ["redeemed code", "3.00", f"code …-{code[-4:]}"],
        ["top-up", "20.00", "invoice 7"],
    ]
    # another customer sees none of it
    _, stranger = arun(make_user(database_url))
    theirs = login(base, stranger).get(base + "/credits")
    assert _history_rows(theirs.text) == [] and "refund #9" not in theirs.text
    arun(assert_ledger_ok(database_url))


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def test_operator_top_up_marked_paid_counts_as_revenue(live, database_url):
    base = live.url
    _, admin = arun(make_user(database_url, admin=True))
    customer_id, _ = arun(make_user(database_url))
    ops = login(base, admin)
    page_url = f"{base}/admin/accounts/{customer_id}"
    token = page_token(ops, page_url)
    for amount, paid in (("40", "1"), ("5", ""), ("-1", "1")):
        done = ops.post(page_url + "/credit", data={"csrf_token": token, "amount": amount,
                                                    "reason": "bank transfer", "paid": paid},
                        allow_redirects=False)
        assert done.status_code == 303
    refused = ops.get(page_url)  # the flash of the last: a debit cannot be marked paid
    assert "Only credit added (a positive amount) can be marked paid." in refused.text
    assert _history_rows(refused.text) == [
        ("adjustment", "+$5.00", "", admin, "bank transfer"),
        ("topup", "+$40.00", "paid", admin, "bank transfer"),
    ]
    money = ops.get(base + "/admin").text.split('id="money-in"', 1)[1].split("</section>")[0]
    assert [visible(b) for b in re.findall(r"<b[^>]*>(.*?)</b>", money)] == \
        ["$40.00", "$0.00", "$5.00"]
    arun(assert_ledger_ok(database_url))
