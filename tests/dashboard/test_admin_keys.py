"""Operators over plain HTTP: revoke any customer's key (refused at once, pushed like the
customer's own revocation), export an account's usage as CSV (with the page's filters),
void unused codes (never redeemable afterwards, who and when recorded; a code raced by a
void and a redemption goes to exactly one), and page past the newest 500 codes. And the
customer's usage filtered by key, page and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import UTC, datetime

import requests
from sqlalchemy import insert, select
from typer.testing import CliRunner

from minitoolai.accounts.store import create_key, get_key
from minitoolai.cli.main import app as cli
from minitoolai.dashboard.codes import create_codes, list_codes, redeem, void_code
from minitoolai.dashboard.tables import redemption_codes
from minitoolai.db.engine import Database
from minitoolai.db.tables import usage
from minitoolai.errors import InvalidRequest
from tests.conftest import assert_ledger_ok
from tests.dashboard.conftest import login, make_user, page_token, visible


async def _in_db(database_url: str, action):
    db = Database(database_url, pool_size=2)
    try:
        return await action(db)
    finally:
        await db.dispose()


async def _usage_rows(db: Database, account_id: int, key_ids: list[str]) -> None:
    async with db.write() as conn:
        await conn.execute(insert(usage), [
            {"request_id": f"u{account_id}-{i}", "account_id": account_id,
             "key_id": key_ids[i % len(key_ids)],
             "created_at": datetime(2026, 11, 3, 12, i, tzinfo=UTC), "endpoint": "/v1/chat",
             "model": "gpt-4o-mini", "prompt_tokens": i, "completion_tokens": 1,
             "cost": 0, "status": "ok"} for i in range(6)])


async def test_operator_revokes_a_customers_key_and_exports_usage(live, database_url):
    _, admin = await make_user(database_url, admin=True)
    customer_id, _ = await make_user(database_url, credit_nano=10**9)
    other_id, _ = await make_user(database_url)

    async def seed(db):
        (a, secret), (b, _) = [await create_key(db, customer_id, n) for n in ("ci", "prod")]
        await _usage_rows(db, customer_id, [a.id, b.id])
        await _usage_rows(db, other_id, [None])
        return a, secret, b

    key, secret, other_key = await _in_db(database_url, seed)
    headers = {"Authorization": f"Bearer {secret}"}
    assert requests.get(live.url + "/api/balance/", headers=headers).status_code == 200

    http = login(live.url, admin)
    page = http.get(live.url + f"/admin/accounts/{customer_id}")
    token = page_token(http, live.url + f"/admin/accounts/{customer_id}")
    assert f'/admin/accounts/{customer_id}/keys/{key.id}/revoke' in page.text
    revoked = http.post(live.url + f"/admin/accounts/{customer_id}/keys/{key.id}/revoke",
                        data={"csrf_token": token}, allow_redirects=False)
    assert revoked.status_code == 303
    shown = http.get(live.url + revoked.headers["location"]).text
    assert "Revoked ci (" in visible(shown) and 'class="flash" role="status"' in shown
    # refused at once, although this server had the key in its lookup cache
    refused = requests.get(live.url + "/api/balance/", headers=headers)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "revoked_api_key"
    assert (await _in_db(database_url, lambda db: get_key(db, key.id))).revoked_at
    # another account's key through this account's URL: 404, nothing revoked
    wrong = http.post(live.url + f"/admin/accounts/{other_id}/keys/{other_key.id}/revoke",
                      data={"csrf_token": token})
    assert wrong.status_code == 404
    assert (await _in_db(database_url, lambda db: get_key(db, other_key.id))).revoked_at is None

    # the account's usage as CSV: its rows only, with the page's key filter
    export = http.get(live.url + f"/admin/accounts/{customer_id}/usage.csv")
    assert export.status_code == 200 and "attachment" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 6 and {r["key_id"] for r in rows} == {key.id, other_key.id}
    one_key = http.get(live.url + f"/admin/accounts/{customer_id}/usage.csv?key={key.id}")
    assert {r["key_id"] for r in csv.DictReader(io.StringIO(one_key.text))} == {key.id}
    assert f'href="/admin/accounts/{customer_id}/usage.csv"' in page.text
    # a customer cannot reach it
    customer = login(live.url, (await _in_db(
        database_url, lambda db: _email(db, customer_id))))
    assert customer.get(live.url + f"/admin/accounts/{customer_id}/usage.csv").status_code \
        == 403
    await assert_ledger_ok(database_url)


async def _email(db, account_id):
    from minitoolai.accounts.store import get_account
    return (await get_account(db, account_id)).email


async def test_customer_usage_filtered_by_key(live, database_url):
    account_id, email = await make_user(database_url)

    async def seed(db):
        keys = [(await create_key(db, account_id, n))[0] for n in ("alpha", "beta")]
        await _usage_rows(db, account_id, [k.id for k in keys])
        return keys

    alpha, beta = await _in_db(database_url, seed)
    http = login(live.url, email)
    page = http.get(live.url + "/usage").text
    assert f'<option value="{alpha.id}" >alpha ({alpha.prefix}…)</option>' in page
    filtered = http.get(live.url + "/usage", params={"key": beta.id}).text
    assert "3 requests" in visible(filtered)
    assert f'value="{beta.id}" selected' in filtered
    assert f"key={beta.id}" in filtered  # the CSV link keeps the filter
    rows = list(csv.DictReader(io.StringIO(
        http.get(live.url + "/usage.csv", params={"key": beta.id}).text)))
    assert [r["key_id"] for r in rows] == [beta.id] * 3
    # another account's key filters to nothing, never to that account's rows
    _, other = await make_user(database_url)
    foreign = login(live.url, other).get(live.url + "/usage.csv", params={"key": beta.id})
    assert list(csv.DictReader(io.StringIO(foreign.text))) == []


async def test_voided_codes_cannot_be_redeemed_and_say_who_voided_them(live, database_url,
                                                                       tmp_path):
    _, admin = await make_user(database_url, admin=True)
    user_id, user = await make_user(database_url)
    codes = await _in_db(database_url, lambda db: create_codes(db, 2_000_000_000, 3,
                                                               batch="void"))
    listed = {c.hint: c for c in await _in_db(database_url, lambda db: list_codes(db))}
    first, second, third = (listed[c[-4:]] for c in codes)
    http = login(live.url, admin)
    token = page_token(http, live.url + "/admin/codes")
    voided = http.post(live.url + f"/admin/codes/{first.id}/void",
                       data={"csrf_token": token, "state": "unused"}, allow_redirects=False)
    assert voided.status_code == 303 and voided.headers["location"] == "/admin/codes?state=unused"
    page = http.get(live.url + voided.headers["location"]).text
    assert f"Voided {first.display} (worth $2.00)" in visible(page)
    assert first.display not in page.split("</p>", 2)[-1]  # no longer among the unused
    page = http.get(live.url + "/admin/codes?state=voided").text
    assert first.display in page and f"voided by {admin}" in visible(page)

    customer = login(live.url, user)
    redeemed = customer.post(live.url + "/redeem", data={
        "csrf_token": page_token(customer, live.url + "/"), "code": codes[0]})
    assert "not valid or has already been used" in redeemed.text
    assert 'role="alert"' in redeemed.text
    customer.post(live.url + "/redeem", data={
        "csrf_token": page_token(customer, live.url + "/"), "code": codes[1]})
    # voiding a used code, or a code twice, is refused with the reason (an error notice)
    for code, reason in ((second, f"already redeemed by {user}"),
                         (first, f"already voided by {admin}")):
        refused = http.post(live.url + f"/admin/codes/{code.id}/void",
                            data={"csrf_token": token})
        assert "Not voided: " in visible(refused.text) and reason in visible(refused.text)
        assert 'class="flash flash-error" role="alert"' in refused.text
    assert http.post(live.url + "/admin/codes/999999/void",
                     data={"csrf_token": token}).status_code == 404

    # the command line voids too, recording the operating-system user
    runner = CliRunner()
    env = {"MINITOOLAI_DATABASE_URL": database_url, "MINITOOLAI_DATA_DIR": str(tmp_path)}
    # (in a thread: the command runs an event loop of its own)
    result = await asyncio.to_thread(runner.invoke, cli, ["codes", "void", str(third.id)],
                                     env=env)
    assert result.exit_code == 0, result.output
    again = await asyncio.to_thread(runner.invoke, cli, ["codes", "void", str(third.id)],
                                    env=env)
    assert again.exit_code == 1 and "already voided by cli" in again.output

    async def stored(db):
        async with db.read() as conn:
            return (await conn.execute(select(redemption_codes.c.id,
                                              redemption_codes.c.voided_by,
                                              redemption_codes.c.used_by)
                                       .order_by(redemption_codes.c.id))).all()

    rows = {r.id: r for r in await _in_db(database_url, stored)}
    assert rows[first.id].voided_by == admin and rows[first.id].used_by is None
    assert rows[second.id].used_by == user_id and rows[second.id].voided_by is None
    assert rows[third.id].voided_by.startswith("cli")
    await assert_ledger_ok(database_url)


async def test_a_void_racing_a_redemption_lets_exactly_one_through(database_url):
    user_id, _ = await make_user(database_url)

    async def race(db):
        outcomes = []
        for _ in range(5):
            (code,) = await create_codes(db, 1_000, 1)
            (row,) = await list_codes(db, limit=1)

            async def use(code):
                try:
                    return ("redeemed", await redeem(db, user_id, code))
                except InvalidRequest:
                    return ("refused", None)

            async def void(code_id):
                try:
                    return ("voided", await void_code(db, code_id, "ops@example.com"))
                except InvalidRequest:
                    return ("refused", None)

            results = await asyncio.gather(use(code), void(row.id))
            outcomes.append(sorted(r[0] for r in results))
        return outcomes

    outcomes = await _in_db(database_url, race)
    assert all(o in (["redeemed", "refused"], ["refused", "voided"]) for o in outcomes)
    await assert_ledger_ok(database_url)


async def test_codes_page_pages_past_the_newest_500(live, database_url):
    _, admin = await make_user(database_url, admin=True)
    await _in_db(database_url, lambda db: create_codes(db, 1_000, 520, batch="many"))
    http = login(live.url, admin)
    first = http.get(live.url + "/admin/codes").text
    ids = [int(i) for i in re.findall(r'<tr data-code-id="(\d+)">', first)]
    assert len(ids) == 500 and ids == sorted(ids, reverse=True)
    older = re.search(r'<a class="button ghost" href="([^"]+)">Older codes', first).group(1)
    assert older == f"/admin/codes?before={ids[-1]}"
    second = http.get(live.url + older.replace("&amp;", "&")).text
    more = [int(i) for i in re.findall(r'<tr data-code-id="(\d+)">', second)]
    assert len(more) == 20 and max(more) < min(ids)
    assert "Older codes →" not in second and "Back to the newest" in second
    unused = http.get(live.url + "/admin/codes?state=unused").text
    assert "/admin/codes?state=unused&amp;before=" in unused
    assert http.get(live.url + "/admin/codes?before=abc").status_code == 400
